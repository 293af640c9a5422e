"""Meshes and processes: data parallelism over every device of a machine, and over many machines.

PyTorch splits a batch over GPUs with ``DistributedDataParallel``: one process per GPU, a hand-placed
all-reduce of the gradients after ``backward()``. Here a batch is one global array whose rows are split over
the ``data`` axis of a ``Mesh``; the parameters and the optimizer state are replicated; ``jax.jit`` partitions
the step and inserts the all-reduce itself. The code that trains on one device is the code that trains on
many: only the shardings of its inputs differ.

Several machines run one process each (``jax.distributed``); every process draws the same batch order and
builds only its own rows of each global batch (``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA = "data"  # the mesh axis that a batch is split along


def make_mesh(devices: int | None = None) -> Mesh:
    """A one-axis mesh, ``data``, over ``devices`` devices of each process (all of them by default).

    The axis is ``Auto``: the compiler decides how each operation of a step is partitioned, given how its
    inputs are. (``jax.make_mesh``'s default, ``Explicit``, makes the sharding part of every array's type
    and asks each operation to agree; the train step does not trace that way: a ``select`` in it mixes a
    batch-sharded operand with a replicated one.)

    Args:
      devices: devices per process; None takes every local device.

    Returns:
      ``Mesh`` with one axis, ``data``, of ``devices * jax.process_count()`` devices.

    Example:
      >>> mesh = make_mesh()        # every device of every process
      >>> mesh = make_mesh(2)       # the first two devices of each process
    """
    local = jax.local_device_count()
    if devices is None:
        devices = local
    if isinstance(devices, bool) or not isinstance(devices, int) or not 1 <= devices <= local:
        raise ValueError(f"devices={devices!r}; expected an integer in [1, {local}], the devices of this process")
    chosen = [d for p in range(jax.process_count()) for d in _process_devices(p)[:devices]]
    return jax.make_mesh((len(chosen),), (DATA,), axis_types=(AxisType.Auto,), devices=chosen)


def _process_devices(process: int) -> list[jax.Device]:
    return sorted((d for d in jax.devices() if d.process_index == process), key=lambda d: d.id)


def mesh_of(tree: Any) -> Mesh | None:
    """The mesh that the arrays of ``tree`` are placed on (by ``replicate``, say), or None if they are not."""
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding):
            return sharding.mesh
    return None


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree`` with every array copied whole to each device of ``mesh``: parameters, optimizer state,
    BatchNorm's statistics. Every process must pass the same values (the same seed gives them).

    Example:
      >>> state = replicate(create_train_state(MLP(), adam(1e-3), images[:1]), make_mesh())
    """
    everywhere = NamedSharding(mesh, P())
    if jax.process_count() == 1:
        return jax.device_put(tree, everywhere)

    def place(leaf):
        # Another process's devices cannot be written by device_put: each process places its own copies.
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jax.device_put(leaf, everywhere)
        return multihost_utils.host_local_array_to_global_array(leaf, mesh, P())

    return jax.tree.map(place, tree)


def check_batch_size(mesh: Mesh, batch_size: int) -> None:
    """Refuses a batch that cannot be split evenly over the mesh: each device must get as many rows."""
    if batch_size % mesh.size:
        raise ValueError(
            f"batch_size={batch_size}; expected a multiple of the {mesh.size} devices "
            f"(choose another batch size, or fewer devices)"
        )


def batch_sharding(mesh: Mesh, batch_size: int, axis: int = 0) -> NamedSharding:
    """Where a batch of ``batch_size`` rows lives: axis ``axis`` split along ``data``.

    A batch that does not split evenly (an epoch's short last batch: 20 examples over 8 devices) is
    replicated instead: every device computes the whole of it, as one device would, so the result stays
    the same as on one device, BatchNorm's statistics included; it costs one redundant step an epoch.

    Example:
      >>> batch_sharding(make_mesh(8), 32).spec, batch_sharding(make_mesh(8), 20).spec
      (P('data',), P())
    """
    if batch_size % mesh.size:
        return NamedSharding(mesh, P())
    return NamedSharding(mesh, P(*[None] * axis, DATA))


def local_rows(sharding: NamedSharding, shape: tuple[int, ...], axis: int = 0) -> slice:
    """The rows along ``axis`` of a global array of ``shape`` that this process's devices hold.

    Example:
      >>> local_rows(batch_sharding(mesh, 32), (32, 784))   # process 1 of 2, 4 devices each
      slice(16, 32, None)
    """
    spans = {index[axis].indices(shape[axis])[:2] for index in sharding.addressable_devices_indices_map(shape).values()}
    start, stop = min(a for a, _ in spans), max(b for _, b in spans)
    if sum(b - a for a, b in spans) != stop - start:
        raise ValueError(f"sharding={sharding}; expected this process's rows along axis {axis} to be contiguous")
    return slice(start, stop)


def global_batch(local: Any, sharding: NamedSharding, rows: int, axis: int = 0) -> Any:
    """Joins the processes' parts of a batch into global arrays with ``rows`` rows along ``axis``.

    Args:
      local: this process's rows (``local_rows``) of each array of the batch: a pytree of numpy arrays.
      sharding: the batch's sharding (``batch_sharding``).
      rows: the global batch size.
      axis: the batch axis.

    Returns:
      The pytree of global ``jax.Array``; on one process, the batch placed on the mesh.

    Example:
      >>> where = batch_sharding(mesh, 32)
      >>> rows = local_rows(where, (32,))
      >>> inputs, labels = global_batch((images[index[rows]], labels[index[rows]]), where, 32)
    """

    def join(a):
        shape = list(np.shape(a))
        shape[axis] = rows
        return jax.make_array_from_process_local_data(sharding, np.asarray(a), tuple(shape))

    return jax.tree.map(join, local)


def row_sharding(mesh: Mesh) -> NamedSharding:
    """Where device-resident data lives: its rows split along ``data``, so each device holds a part of it."""
    return NamedSharding(mesh, P(DATA))


def padded_rows(rows: int, mesh: Mesh) -> int:
    """``rows`` rounded up to a multiple of the devices: the length of device-resident data on ``mesh``."""
    return -(-rows // mesh.size) * mesh.size


def shard_rows(arrays: Any, mesh: Mesh) -> Any:
    """Device-resident data split by rows over the mesh (``row_sharding``): each device holds
    ``1 / mesh.size`` of it rather than a copy.

    A step gathers its batch with indices split like a batch (``batch_sharding``), and the gather's output
    follows them: XLA partitions ``arrays[index]`` over row-sharded data as a lookup of the rows each
    device holds (the others masked to zero) and one all-reduce of the batch, after which each device
    keeps its own rows. (Replicated indices with the output constrained to ``batch_sharding`` compile to
    the same program.) The dataset never moves; a step moves its batch once more, at batch 32 100 kB for
    MNIST against the 0.8 MB all-reduce of the MLP's gradients. Sums with zeros are exact, so the batch is
    the one a single device gathers.

    Rows are padded with zeros to ``padded_rows``; no index ever points at the padding. Every process
    holds the whole dataset on its host and places its own devices' rows.

    Example:
      >>> images_on_devices, labels_on_devices = shard_rows((images, labels), make_mesh())
    """

    def place(a):
        a = np.asarray(a)
        pad = padded_rows(len(a), mesh) - len(a)
        if pad:
            a = np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
        return jax.make_array_from_callback(a.shape, row_sharding(mesh), lambda index: a[index])

    return jax.tree.map(place, arrays)


def is_main_process() -> bool:
    """Whether this process prints and writes files: process 0 (the only one without ``jax.distributed``)."""
    return jax.process_index() == 0


# --- several processes -------------------------------------------------------------------------------------

# What a launcher sets when it starts several processes of one job. A plain shell sets none of them, so
# ``initialize()`` without arguments leaves a laptop's single process alone (and never waits on a network).
_CLUSTERS = {
    "SLURM": lambda env: int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1,  # set by `srun`, not in the batch script
    "Open MPI": lambda env: "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1,
    "Kubernetes (indexed Job)": lambda env: "KUBERNETES_SERVICE_HOST" in env and "JOB_COMPLETION_INDEX" in env,
    "Cloud TPU (several hosts)": lambda env: "," in env.get("TPU_WORKER_HOSTNAMES", ""),
    "JAX_COORDINATOR_ADDRESS": lambda env: "JAX_COORDINATOR_ADDRESS" in env,
}


def detect_cluster(env: dict[str, str] | None = None) -> str | None:
    """The multi-process launcher that ``env`` (default ``os.environ``) shows, or None."""
    env = os.environ if env is None else env
    for name, present in _CLUSTERS.items():
        try:
            if present(env):
                return name
        except ValueError:  # a malformed count: not a launch we can trust
            continue
    return None


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout: int = 120,
) -> int:
    """Joins this process to a multi-process run (``jax.distributed.initialize``), before any JAX work.

    With all three arguments, process ``process_id`` of ``num_processes`` meets the others at
    ``coordinator`` (``HOST:PORT``; process 0 listens there). With none, a launcher that sets up several
    processes (SLURM's ``srun``, Open MPI's ``mpirun``, an indexed Kubernetes Job, a multi-host TPU; see
    ``detect_cluster``) is asked for them; otherwise this is one process and nothing is started. On CPUs
    the processes' all-reduces go over gloo (TCP).

    Failures are one line and bounded in time: an address that does not resolve or is not this machine's
    (for process 0) at once; no coordinator listening (for the others), or processes that do not all join,
    after ``timeout`` seconds.

    Args:
      coordinator: ``HOST:PORT`` of process 0.
      num_processes: the processes of the run.
      process_id: this process, in ``[0, num_processes)``.
      timeout: seconds to wait for the coordinator and for every process to join.

    Returns:
      The number of processes (1 when nothing was started).

    Raises:
      ValueError: arguments given only in part, or out of range.
      ConnectionError: the coordinator cannot be reached or is not this machine's (process 0).

    Example:
      >>> initialize("10.0.0.1:1234", num_processes=2, process_id=0)   # on the first machine
      >>> initialize("10.0.0.1:1234", num_processes=2, process_id=1)   # on the second
    """
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    if all(v is None for v in given.values()):
        cluster = detect_cluster()
        if cluster is None:
            return 1
        _use_gloo_on_cpu()
        with _deadline(timeout, f"{cluster}: the processes did not all join within {timeout} s"):
            jax.distributed.initialize(initialization_timeout=timeout + 30)
        return jax.process_count()
    missing = [name for name, v in given.items() if v is None]
    if missing:
        raise ValueError(f"{missing[0]}=None; expected coordinator, num_processes and process_id together")
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes={num_processes!r}; expected a positive integer")
    if isinstance(process_id, bool) or not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ValueError(f"process_id={process_id!r}; expected an integer in [0, {num_processes})")
    host, port = _split_address(coordinator)
    if process_id == 0:
        _check_can_listen(coordinator, host, port)
    else:
        _wait_for_listener(coordinator, host, port, timeout)
    _use_gloo_on_cpu()
    with _deadline(timeout, f"num_processes={num_processes}; expected all of them to join {coordinator} within {timeout} s"):
        # The runtime's own timeout is longer: it aborts the process with a stack dump, ours exits with a line.
        jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=timeout + 30)
    return jax.process_count()


def _use_gloo_on_cpu() -> None:
    """CPU devices of different processes all-reduce over gloo (TCP); GPUs and TPUs ignore the setting."""
    if jax.config.jax_cpu_collectives_implementation != "mpi":  # keep an explicit choice of MPI
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def _split_address(coordinator: Any) -> tuple[str, int]:
    host, sep, port = str(coordinator).rpartition(":")
    host = host.strip("[]")  # [::1]:1234
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator={coordinator!r}; expected HOST:PORT, e.g. 10.0.0.1:1234")
    return host, int(port)


def _addresses(coordinator: str, host: str, port: int) -> list[tuple]:
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ConnectionError(f"coordinator={coordinator!r}; expected a host name that resolves ({error.strerror})") from None


def _check_can_listen(coordinator: str, host: str, port: int) -> None:
    """Process 0 runs the coordinator: its address must be this machine's, and its port free."""
    reason = ""
    for family, kind, proto, _, address in _addresses(coordinator, host, port):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
                return
            except OSError as error:
                in_use = error.errno == errno.EADDRINUSE
                reason = f"port {port} is in use" if in_use else f"{host} is not an address of this machine"
    raise ConnectionError(f"coordinator={coordinator!r}: {reason}; expected an address where process 0 can listen")


def _wait_for_listener(coordinator: str, host: str, port: int, timeout: float) -> None:
    """Waits up to ``timeout`` s for process 0 to listen, so a wrong address fails with a line, not a hang."""
    addresses = _addresses(coordinator, host, port)
    deadline = time.monotonic() + timeout
    while True:
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as probe:
                probe.settimeout(max(0.1, min(2.0, deadline - time.monotonic())))
                if probe.connect_ex(address) == 0:
                    return
        if time.monotonic() >= deadline:
            raise ConnectionError(
                f"coordinator={coordinator!r}: nothing listens there after {timeout:g} s; "
                f"expected process 0 (--process-id 0) to run on that host and port"
            )
        time.sleep(0.2)


class _deadline:
    """Ends the process with one line on stderr if a block outlives ``seconds``.

    ``jax.distributed.initialize`` cannot be interrupted, and when its own timeout expires the runtime
    aborts the process with a C++ stack dump; this exits first, with the reason.
    """

    def __init__(self, seconds: float, message: str):
        self.timer = threading.Timer(seconds, self._expire, (message,))
        self.timer.daemon = True

    @staticmethod
    def _expire(message: str) -> None:
        print(f"jaxtrain: error: {message}", file=sys.stderr, flush=True)
        os._exit(1)

    def __enter__(self):
        self.timer.start()

    def __exit__(self, *exc):
        self.timer.cancel()
