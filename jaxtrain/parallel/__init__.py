"""Where the steps run: meshes of devices and processes (``devices``: data parallelism over one machine's
devices and over many machines), and how the steps are compiled (``compiler``: ``jit`` with the XLA options
that suit the program, and the on-disk cache of compiled programs)."""

from jaxtrain.parallel.compiler import cache_compilations, jit
from jaxtrain.parallel.devices import initialize, make_mesh

__all__ = ["cache_compilations", "initialize", "jit", "make_mesh"]
