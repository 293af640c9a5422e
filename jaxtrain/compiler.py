"""The options that jaxtrain's compiled steps give XLA: ``COMPILER_OPTIONS``, passed to each ``jax.jit`` of
``jaxtrain.train``.

XLA:CPU hands the convolutions, matrix products and reductions of a program to the YNNPACK library
(jaxlib 0.10's default). For convolutions, XLA:CPU's own (Eigen) kernels are the faster ones: with them
the CNN's training step took 20 ms instead of 36 ms (batch 32, 2 cores), compiled in 2.3 s instead of
3.1 s, and ran as fast inside ``lax.scan`` as alone, while the reductions (BatchNorm's statistics and
its gradient) run 5 to 10 times faster in YNNPACK than in XLA's own loops. So jaxtrain's steps keep
YNNPACK's reductions and matrix products and give it no convolution (``benchmarks/cnn_step.py``
measures the choices side by side). The MLP's step, matrix products only, is the same either way.

The option is one of XLA:CPU's experimental ones, so it is given only to the jaxlib releases it was
measured with (0.9.2 to 0.10); with others the steps compile with XLA's defaults. Other backends do not
read it.
"""

from __future__ import annotations

import jaxlib

# The fusion types that XLA:CPU gives to YNNPACK: XLA's default list without the convolutions.
YNN_FUSIONS = "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


COMPILER_OPTIONS: dict[str, str] | None = (
    {"xla_cpu_experimental_ynn_fusion_type": YNN_FUSIONS} if (0, 9, 2) <= _release(jaxlib.__version__) < (0, 11) else None
)
