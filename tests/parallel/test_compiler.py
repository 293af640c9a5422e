"""How jaxtrain's steps are compiled: jaxtrain.parallel.compiler's jit and its XLA options, and the compilation cache."""

import json
import logging
import re
import subprocess
import sys

import jax
import jaxlib
import numpy as np
import pytest

from jaxtrain import CNN, MLP, adam, create_train_state, eval_step, train_step
from jaxtrain.parallel import compiler
from jaxtrain.parallel.compiler import OLDER_EMITTERS, YNN_OPTION, compiler_options, has_convolution
from jaxtrain.training.step import train_step_fn, train_steps_fn

xla_cpu_options = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not all(compiler.accepts(*option) for option in YNN_OPTION.items()),
    reason="XLA:CPU's YNNPACK option, which this XLA does not have",
)


def _in_ynnpack(compiled) -> set[str]:
    """The kinds of operation (the last part of their op_name) that XLA:CPU hands to YNNPACK."""
    lines = [line for line in compiled.as_text().splitlines() if '"__ynn_fusion"' in line]
    return {name for line in lines for name in re.findall(r'op_name="[^"]*/(\w+)"', line)}


@xla_cpu_options
def test_the_cnn_steps_keep_their_convolutions_out_of_ynnpack_and_their_reductions_in():
    images, labels = np.zeros((8, 28, 28, 1), np.float32), np.zeros(8, np.int32)
    state = create_train_state(CNN(channels=(16, 32)), adam(1e-3), images[:1])
    default = _in_ynnpack(jax.jit(train_step_fn).lower(state, (images, labels)).compile())
    assert {"conv_general_dilated", "reduce_sum"} <= default  # what XLA's default would do
    ours = _in_ynnpack(train_step.lower(state, (images, labels)).compile())
    assert "conv_general_dilated" not in ours
    assert "reduce_sum" in ours  # BatchNorm's statistics and gradient
    assert "conv_general_dilated" not in _in_ynnpack(eval_step.lower(state, (images, labels)).compile())


@xla_cpu_options
def test_with_64_bit_jax_the_steps_compile_with_xlas_defaults(x64):
    # Eigen's float64 convolutions are several times slower than YNNPACK's.
    images, labels = np.zeros((8, 28, 28, 1)), np.zeros(8, np.int32)
    state = create_train_state(CNN(channels=(16, 32)), adam(1e-3), images[:1])
    assert "conv_general_dilated" in _in_ynnpack(train_step.lower(state, (images, labels)).compile())


# What XLA:CPU accepts, by jaxlib release: the older fusion emitters are gone from 0.12, the YNNPACK option stays.
KNOWN_XLAS = {"0.10": {"ynn": True, "older emitters": True}, "0.12": {"ynn": True, "older emitters": False}}


@pytest.mark.quick
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's options")
def test_the_probe_finds_what_each_known_xla_accepts():
    assert not compiler.accepts("xla_no_such_option", True)
    assert not compiler.accepts("xla_cpu_experimental_ynn_fusion_type", "NO_SUCH_FUSION_TYPE")
    release = ".".join(jaxlib.__version__.split(".")[:2])
    if release not in KNOWN_XLAS:
        pytest.skip(f"jaxlib {jaxlib.__version__}: what it accepts is not recorded here")
    known = KNOWN_XLAS[release]
    assert all(compiler.accepts(*option) for option in YNN_OPTION.items()) == known["ynn"]
    assert all(compiler.accepts(*option) for option in OLDER_EMITTERS.items()) == known["older emitters"]
    assert compiler_options(convolutions=True) == {**YNN_OPTION, **(OLDER_EMITTERS if known["older emitters"] else {})}
    assert compiler_options(convolutions=False) == YNN_OPTION


@xla_cpu_options
def test_an_option_xla_refuses_is_left_out_the_others_kept_and_the_refusal_logged(monkeypatch, caplog):
    refused = set()
    real = compiler.accepts.__wrapped__  # the probe itself, not its answers cached for the process
    monkeypatch.setattr(compiler, "accepts", lambda name, value: name not in refused and real(name, value))
    monkeypatch.setattr(compiler, "_all_accepted", lambda: False)  # not all of them: each is probed
    refused.add(next(iter(OLDER_EMITTERS)))
    assert compiler_options(convolutions=True) == YNN_OPTION
    refused.add(next(iter(YNN_OPTION)))
    assert compiler_options(convolutions=True) == compiler_options(convolutions=False) == {}
    # With nothing accepted, the CNN's step compiles with XLA's defaults: its convolutions go to YNNPACK.
    images, labels = np.zeros((8, 28, 28, 1), np.float32), np.zeros(8, np.int32)
    state = create_train_state(CNN(channels=(16, 32)), adam(1e-3), images[:1])
    assert "conv_general_dilated" in _in_ynnpack(compiler.jit(train_step_fn).lower(state, (images, labels)).compile())
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="jaxtrain.parallel.compiler"):
        assert not compiler.accepts.__wrapped__("xla_no_such_option", 1)
    assert "xla_no_such_option=1" in caplog.text and "compiles without it" in caplog.text


def test_convolutions_are_found_wherever_the_program_has_them():
    # The CNN's step (with conv2d's custom gradient), 2 of them in a lax.scan, and the MLP's, which has none.
    images, labels = np.zeros((2, 8, 28, 28, 1), np.float32), np.zeros((2, 8), np.int32)
    cnn = create_train_state(CNN(channels=(16, 32)), adam(1e-3), images[0, :1])
    mlp = create_train_state(MLP(), adam(1e-3), images[0, :1])
    assert has_convolution(jax.make_jaxpr(train_step_fn)(cnn, (images[0], labels[0])))
    assert has_convolution(jax.make_jaxpr(train_steps_fn)(cnn, (images, labels)))
    assert not has_convolution(jax.make_jaxpr(train_steps_fn)(mlp, (images, labels)))


# Compiles the CNN's step with the cache in argv[1]; prints the compilations (loads from the cache
# included, as JAX counts them), the loads and the loss.
_CACHED_STEP = """
import json, sys
import jax, numpy as np
from jaxtrain import CNN, adam, create_train_state, train_step
from jaxtrain.parallel.compiler import cache_compilations, compiler_options

events = {"compiled": 0, "loaded": 0}
names = {"/jax/core/compile/backend_compile_duration": "compiled", "/jax/compilation_cache/cache_retrieval_time_sec": "loaded"}
jax.monitoring.register_event_duration_secs_listener(
    lambda event, seconds, **_: events.__setitem__(names[event], events[names[event]] + 1) if event in names else None)
images, labels = np.random.default_rng(0).random((8, 28, 28, 1), np.float32), np.arange(8, dtype=np.int32)
state = create_train_state(CNN(channels=(16, 32)), adam(1e-3), images[:1])
cache_compilations(sys.argv[1])
compiler_options(convolutions=True)  # the options' probes are compilations of their own
before = dict(events)
state, metrics = train_step(state, (images, labels))
print(json.dumps({key: events[key] - before[key] for key in events} | {"loss": float(metrics["loss"])}))
"""


def test_a_second_process_loads_the_compiled_step_from_the_cache_and_computes_the_same(tmp_path):
    def run() -> dict:
        done = subprocess.run([sys.executable, "-c", _CACHED_STEP, str(tmp_path)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.splitlines()[-1])

    first = run()
    assert first["compiled"] == 1 and first["loaded"] == 0
    assert any(f.name.startswith("jit_train_step_fn-") for f in tmp_path.iterdir())
    second = run()
    assert second["compiled"] == 1 and second["loaded"] == 1
    assert second["loss"] == first["loss"]


@pytest.mark.quick
@pytest.mark.parametrize("model", ["mlp", "cnn", "nnx-cnn"])
def test_initialization_is_one_program(model):
    """create_train_state compiles one XLA program, not one per initializer op; a width no other test uses
    keeps the program out of this process's caches."""
    from flax import nnx

    from jaxtrain import NNXCNN

    sample = np.zeros((1, 8, 8, 1), np.float32)
    module = {
        "mlp": lambda: MLP(hidden=(37,)),
        "cnn": lambda: CNN(channels=(5, 7), hidden=(37,)),
        "nnx-cnn": lambda: NNXCNN((8, 8, 1), channels=(5, 7), hidden=(37,), rngs=nnx.Rngs(0)),
    }[model]()
    with compiler.count_compilations() as compiled:
        create_train_state(module, adam(1e-3), sample, seed=3)
    assert compiled.programs == 1, dict(compiled.names)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="RUN_ONCE is given on the CPU only")
def test_the_initialization_compiles_with_code_optimization_off():
    """The initialization runs once, so XLA does not optimize its code (compiler.RUN_ONCE): the state's weights
    are that program's, bit for bit. The optimized program's differ from them by a few ulp (fused
    multiply-adds), which is what lets this test tell the two apart."""
    import functools

    from jaxtrain.training import step

    model, tx, sample = CNN(), adam(1e-3), np.zeros((1, 28, 28, 1), np.float32)
    state = create_train_state(model, tx, sample, seed=0)
    program = functools.partial(step._start, functools.partial(model.init, train=False), tx)
    unoptimized, optimized = (
        jax.jit(program, compiler_options=options)(np.uint32(0), sample, None)[1]["params"]
        for options in (compiler.RUN_ONCE, {})
    )
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
    assert same(state.params, unoptimized)
    assert not same(state.params, optimized)
