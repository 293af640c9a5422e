"""Data parallelism: meshes and shardings, the same training on 1 and 8 devices and on 1 and 2 processes,
and the command line's flags for several machines (jaxtrain.parallel.devices).

JAX fixes the number of CPU devices when it starts, so the runs on several devices happen in child processes
(this file run as a script) with ``JAX_NUM_CPU_DEVICES`` set; the parent compares what they report.
"""

import contextlib
import importlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest

from jaxtrain.parallel import devices
from jaxtrain.config import Config


# --- one device, no child process ----------------------------------------------------------------------------


@pytest.mark.quick
@pytest.mark.parametrize(
    "env, cluster",
    [
        ({}, None),
        ({"HOME": "/home/me", "PATH": "/usr/bin"}, None),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_PROCID": "0"}, None),  # the sbatch script itself
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4"}, "SLURM"),
        ({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1"}, None),  # srun -n 1
        ({"OMPI_MCA_orte_hnp_uri": "1;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "2"}, "Open MPI"),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, None),  # any pod: not by itself a multi-process job
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "0"}, "Kubernetes (indexed Job)"),
        ({"TPU_WORKER_HOSTNAMES": "localhost"}, None),
        ({"TPU_WORKER_HOSTNAMES": "t0,t1"}, "Cloud TPU (several hosts)"),
    ],
)
def test_a_launcher_is_detected_only_when_it_set_up_several_processes(env, cluster):
    assert devices.detect_cluster(env) == cluster


@pytest.mark.quick
def test_initialize_without_flags_or_launcher_starts_nothing(monkeypatch):
    for name in [n for n in os.environ if n.startswith(("SLURM_", "OMPI_", "TPU_", "JAX_COORDINATOR", "KUBERNETES_"))]:
        monkeypatch.delenv(name)
    start = time.perf_counter()
    assert devices.initialize() == 1
    assert time.perf_counter() - start < 1 and jax.process_count() == 1


@pytest.mark.quick
@pytest.mark.parametrize(
    "args, message",
    [
        (("localhost:1", 2, None), "process_id=None; expected coordinator, num_processes and process_id together"),
        (("localhost", 2, 1), "coordinator='localhost'; expected HOST:PORT"),
        (("localhost:99999", 2, 1), "coordinator='localhost:99999'; expected HOST:PORT"),
        (("localhost:1", 0, 0), "num_processes=0; expected a positive integer"),
        (("localhost:1", 2, 2), "process_id=2; expected an integer in [0, 2)"),
    ],
)
def test_bad_process_arguments_fail_at_once(args, message):
    with pytest.raises(ValueError) as error:
        devices.initialize(*args, timeout=1)
    assert str(error.value).startswith(message)


@pytest.mark.quick
def test_one_device_mesh_and_the_devices_setting():
    mesh = devices.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == jax.device_count()
    with pytest.raises(ValueError, match=rf"devices=0; expected an integer in \[1, {jax.local_device_count()}\]"):
        devices.make_mesh(0)
    with pytest.raises(ValueError, match="devices=0; expected a positive integer"):
        Config(devices=0)
    assert Config(devices=2).devices == 2


# --- 8 devices in one process ---------------------------------------------------------------------------------


def _run_child(name: str, num_devices: int, timeout: float = 240) -> dict:
    """Runs ``_CHILDREN[name]`` in a fresh process with ``num_devices`` CPU devices; returns what it printed."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(num_devices)}
    result = subprocess.run([sys.executable, __file__, name], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    return _run_child("eight_devices", 8)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.slow
def test_eight_devices_replicate_the_state_and_split_the_batch_and_the_data(eight_devices):
    layout = eight_devices["layout"]
    assert layout["mesh"] == 8
    assert layout["state_replicated"] and layout["state_devices"] == 8
    assert layout["batch_spec"] == "P(None, 'data')" and layout["batch_shard_rows"] == [4] * 8
    assert layout["tail_replicated"]  # a short batch of 20 does not split over 8 devices: it runs whole on each
    assert layout["data_spec"] == "P('data',)" and layout["data_shard_rows"] == [layout["data_rows"] // 8] * 8
    # The gather from row-sharded data moves the batch, never the dataset: no collective carries all its rows.
    assert layout["collective_shapes"] and not any(str(layout["data_rows"]) in shape for shape in layout["collective_shapes"])
    assert layout["second_epoch_compiles"] == 0
    assert layout["indivisible_batch_error"] == "batch_size=20; expected a multiple of the 8 devices (choose another batch size, or fewer devices)"


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("feed", ["per step", "fused", "device-resident"])
def test_every_feeding_mode_trains_on_eight_devices_what_one_device_trains(eight_devices, model, feed):
    one, eight = (eight_devices["feeding"][f"{model}/{feed}/{n}"] for n in (1, 8))
    assert _rel(eight["losses"], one["losses"]) < 1e-5  # SGD with momentum, float32, every epoch
    assert abs(eight["accuracy"] - one["accuracy"]) <= 0.003


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_in_float64_eight_devices_train_what_one_trains_to_round_off(eight_devices, model):
    one, eight = (eight_devices["float64"][f"{model}/{n}"] for n in (1, 8))
    assert _rel(eight, one) < 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_every_optimizer_takes_the_same_first_hundred_steps_on_eight_devices(eight_devices, model, optimizer):
    one, eight = (eight_devices["steps"][f"{model}/{optimizer}/{n}"] for n in (1, 8))
    assert len(one["losses"]) == 100
    assert _rel(eight["losses"], one["losses"]) < 1e-5
    assert abs(eight["accuracy"] - one["accuracy"]) <= 0.003


@pytest.fixture(scope="module")
def fit_inputs() -> dict:
    return _run_child("fit_inputs", 8)


def _spec_rows(call: list[dict]) -> list[tuple[str, list]]:
    return [(leaf["spec"], leaf["shards"]) for leaf in call]


@pytest.mark.parametrize("feed", ["per step", "fused", "device-resident"])
def test_fit_sends_each_call_its_batch_split_over_the_eight_devices(fit_inputs, feed):
    """What fit really hands its compiled calls on 8 devices: the batch axis (axis 1 of ``(steps, batch, ...)``)
    split along ``data``, 32 / 8 = 4 rows on each device, not the whole batch on every one; only the short
    last batch (4 rows, which do not split over 8) runs whole on each. Device-resident data is split by rows."""
    calls = fit_inputs[feed]
    if feed == "device-resident":  # (data, index): the data's rows split, the indices split like a batch
        (images, labels, index), (*_, tail) = calls
        assert (images["spec"], labels["spec"]) == ("P('data',)", "P('data',)")
        assert images["shards"] == [[13, 8, 8, 1]] * 8 and labels["shards"] == [[13]] * 8  # 100 rows padded to 104
        assert _spec_rows([index]) == [("P(None, 'data')", [[3, 4]] * 8)] and index["shape"] == [3, 32]
        assert _spec_rows([tail]) == [("P()", [[1, 4]] * 8)]
        return
    full = [call for call in calls if call[1]["shape"][1] == 32]
    steps = [call[1]["shape"][0] for call in full]
    assert steps == ([1, 1, 1] if feed == "per step" else [2, 1])  # 100 examples: 3 batches of 32, then 4
    for call, k in zip(full, steps):
        assert _spec_rows(call) == [("P(None, 'data')", [[k, 4, 8, 8, 1]] * 8), ("P(None, 'data')", [[k, 4]] * 8)]
    assert _spec_rows(calls[-1]) == [("P()", [[1, 4, 8, 8, 1]] * 8), ("P()", [[1, 4]] * 8)]


# --- two processes ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _processes(*commands: tuple[list[str], dict]):
    """Starts the commands together; kills any still running when the block ends, however it ends."""
    running = []
    # In an empty folder: `python -m jaxtrain` there imports the installed package, not the checkout's.
    outside = tempfile.TemporaryDirectory(prefix="jaxtrain-cwd-")
    try:
        for args, env in commands:
            running.append(subprocess.Popen(args, cwd=outside.name, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        yield running
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
            process.communicate()
        outside.cleanup()


def _train_command(*flags: str) -> list[str]:
    common = ["--dataset", "digits", "--epochs", "2", "--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.05"]
    return [sys.executable, "-m", "jaxtrain", "train", *common, *flags]


def _env(num_devices: int) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(num_devices)}


@pytest.mark.slow
@pytest.mark.parametrize("feed", [["--steps-per-call", "5", "--no-data-on-device"], ["--data-on-device"]], ids=["fused", "device-resident"])
def test_two_processes_of_two_devices_train_what_one_process_of_four_trains(tmp_path, feed):
    port, reports = _free_port(), [tmp_path / f"{name}.json" for name in ("p0", "p1", "reference")]
    group = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--init-timeout", "60"]
    with _processes(
        (_train_command(*feed, *group, "--process-id", "0", "--report", str(reports[0])), _env(2)),
        (_train_command(*feed, *group, "--process-id", "1", "--report", str(reports[1])), _env(2)),
        (_train_command(*feed, "--report", str(reports[2])), _env(4)),
    ) as running:
        outputs = [process.communicate(timeout=240) for process in running]
    for process, (out, err) in zip(running, outputs):
        assert process.returncode == 0, err[-3000:]
    assert "Epoch 2, Loss: " in outputs[0][0] and "Epoch" not in outputs[1][0]  # only process 0 prints
    assert not reports[1].exists()  # and writes the report
    pair, reference = (json.loads(path.read_text()) for path in (reports[0], reports[2]))
    assert (pair["processes"], pair["devices"]) == (2, 4) and (reference["processes"], reference["devices"]) == (1, 4)
    losses = lambda report: [h["train_loss"] for h in report["history"]]  # noqa: E731
    assert _rel(losses(pair), losses(reference)) < 1e-5
    assert abs(pair["test_accuracy"] - reference["test_accuracy"]) <= 0.003


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, message, seconds",
    [
        (["--num-processes", "2", "--process-id", "1", "--init-timeout", "3"], "nothing listens there after 3 s", 30),
        (["--num-processes", "2", "--process-id", "0", "--host", "nonexistent.invalid"], "expected a host name that resolves", 30),
        (["--num-processes", "2", "--process-id", "0", "--host", "192.0.2.1"], "192.0.2.1 is not an address of this machine", 30),
        (["--num-processes", "2", "--process-id", "0", "--init-timeout", "3"], "expected all of them to join", 40),
        (["--num-processes", "2"], "--process-id is missing; expected --coordinator, --num-processes and --process-id together", 30),
    ],
    ids=["no coordinator", "unresolvable", "not this machine", "nobody joins", "a flag missing"],
)
def test_a_bad_coordinator_is_one_line_within_a_bounded_time(flags, message, seconds, run_cli):
    host = flags[flags.index("--host") + 1] if "--host" in flags else "127.0.0.1"
    flags = [f for i, f in enumerate(flags) if "--host" not in (f, flags[i - 1] if i else None)]
    start = time.perf_counter()
    result = run_cli("train", "--dataset", "digits", "--epochs", "1", "--coordinator", f"{host}:{_free_port()}", *flags, timeout=seconds + 30)
    assert time.perf_counter() - start < seconds
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr


# --- the child processes ---------------------------------------------------------------------------------------


def _eight_devices() -> dict:
    """On 8 CPU devices: each run on a mesh of 1 device and on one of 8, from the same seed."""
    from jaxtrain import CNN, MLP, ArrayDataset, DataLoader, adam, adamw, create_train_state, fit, sgd
    from jaxtrain.sources.builtin import load_digits
    from jaxtrain.training.step import gather_steps, train_steps

    assert jax.device_count() == 8
    images, labels = load_digits("train")
    test = DataLoader(ArrayDataset(*load_digits("test")), 200)
    meshes = {n: devices.make_mesh(n) for n in (1, 8)}
    # 1348 = 42 batches of 32 and one of 4, 276 = 8 of 32 and one of 20: short batches that do not split
    # over 8 devices.
    # Dropout too: its masks, drawn for the global batch, are the same however the batch is split.
    models = {"mlp": (MLP(hidden=(64,), dropout=0.1), 1348), "cnn": (CNN(channels=(4, 8), hidden=(32,)), 276)}
    # One instance each: the optimizer is part of the compiled program, so runs that share it share compilations.
    # SGD's rate keeps the CNN's loss from spiking: a spike amplifies round-off, and at 0.05 the two runs'
    # losses parted after one at step 45 (from 2e-6 to 1e-2 relative), as two runs on one device would.
    optimizers = {"sgd": sgd(0.01, momentum=0.9), "adam": adam(1e-3), "adamw": adamw(1e-3)}
    out = {"feeding": {}, "float64": {}, "steps": {}}

    def loader(n_examples, x=images):
        return DataLoader(ArrayDataset(x[:n_examples], labels[:n_examples]), 32, shuffle=True, seed=1)

    feeds = {"per step": dict(steps_per_call=1), "fused": dict(steps_per_call=2), "device-resident": dict(steps_per_call=100, data_on_device=True)}
    for name, (model, n_examples) in models.items():
        for feed, mode in feeds.items():
            for n, mesh in meshes.items():
                state = create_train_state(model, optimizers["sgd"], images[:1], seed=0)
                state, history = fit(state, loader(n_examples), 2, test, log=None, mesh=mesh, **mode)
                out["feeding"][f"{name}/{feed}/{n}"] = {
                    "losses": [h["train_loss"] for h in history], "accuracy": history[-1]["test_accuracy"]}

    # The first 100 steps of every optimizer, one call each (as fit's per-step mode makes them), each loss
    # kept; the batches from successive epochs, all full. Then the test accuracy, on the host.
    xt, yt = load_digits("test")
    for name, (model, n_examples) in models.items():
        n_examples -= n_examples % 32
        order = np.concatenate([loader(n_examples).indices(epoch) for epoch in range(100 * 32 // n_examples + 1)])
        index = order[: 100 * 32].reshape(100, 1, 32)
        for opt, tx in optimizers.items():
            for n, mesh in meshes.items():
                state = devices.replicate(create_train_state(model, tx, images[:1], seed=0), mesh)
                where, losses = devices.batch_sharding(mesh, 32, axis=1), []
                for step in index:
                    state, metrics = train_steps(state, devices.global_batch((images[step], labels[step]), where, 32, axis=1))
                    losses.append(float(metrics["loss"][0]))  # a read each step: at most one call in flight
                logits = model.apply(jax.device_get(state.variables), xt)
                out["steps"][f"{name}/{opt}/{n}"] = {"losses": losses, "accuracy": float(np.mean(np.argmax(logits, -1) == yt))}

    # float64 end to end: SGD with momentum, 2 epochs, per step, from the float32 start (exactly widened).
    starts = {name: create_train_state(model, optimizers["sgd"], images[:1], seed=0).variables for name, (model, _) in models.items()}
    jax.config.update("jax_enable_x64", True)
    x64 = images.astype(np.float64)
    for name, (model, n_examples) in models.items():
        for n, mesh in meshes.items():
            variables = jax.tree.map(lambda a: np.asarray(a, np.float64), starts[name])
            state = create_train_state(model, optimizers["sgd"], x64[:1], variables=variables)
            state, history = fit(state, loader(n_examples, x64), 2, log=None, mesh=mesh)
            assert jax.tree.leaves(state.params)[0].dtype == np.float64
            out["float64"][f"{name}/{n}"] = [h["train_loss"] for h in history]
    jax.config.update("jax_enable_x64", False)

    # Where the arrays live on 8 devices.
    mesh, model = meshes[8], models["mlp"][0]
    state = devices.replicate(create_train_state(model, optimizers["sgd"], images[:1]), mesh)
    where = devices.batch_sharding(mesh, 32, axis=1)
    batch = devices.global_batch((images[None, :32], labels[None, :32]), where, 32, axis=1)
    data = devices.shard_rows((images, labels), mesh)
    index = devices.global_batch(np.arange(32)[None], where, 32, axis=1)
    compiled = gather_steps.lower(state, data, index).compile().as_text()
    collectives = [line.split("=", 1)[1].strip().split(" ")[0] for line in compiled.splitlines()
                   if any(f" {op}(" in line for op in ("all-gather", "all-reduce", "all-to-all", "reduce-scatter", "collective-permute"))]
    compiles = [0]
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, *_, **__: compiles.__setitem__(0, compiles[0] + (event == "/jax/core/compile/backend_compile_duration")))
    trained, _ = fit(state, loader(1348), 1, log=None, mesh=mesh, steps_per_call=2)
    before = compiles[0]
    fit(trained, loader(1348), 1, log=None, mesh=mesh, steps_per_call=2)
    try:
        fit(state, DataLoader(ArrayDataset(images, labels), 20), 1, log=None, mesh=mesh)
        error = None
    except ValueError as e:
        error = str(e)
    out["layout"] = {
        "mesh": mesh.size,
        "state_replicated": all(a.sharding.is_fully_replicated for a in jax.tree.leaves(trained)),
        "state_devices": min(len(a.sharding.device_set) for a in jax.tree.leaves(trained)),
        "batch_spec": repr(batch[0].sharding.spec),
        "batch_shard_rows": [s.data.shape[1] for s in batch[0].addressable_shards],
        "tail_replicated": devices.batch_sharding(mesh, 20, axis=1).is_fully_replicated,
        "data_spec": repr(data[0].sharding.spec),
        "data_rows": data[0].shape[0],
        "data_shard_rows": [s.data.shape[0] for s in data[0].addressable_shards],
        "collective_shapes": collectives,
        "second_epoch_compiles": compiles[0] - before,
        "indivisible_batch_error": error,
    }
    return out


def _fit_inputs() -> dict:
    """On 8 CPU devices: the arrays that fit hands each compiled call, in each feeding mode (a wrapper in
    place of the calls records their shape, spec and the shape of each device's shard)."""
    from jaxtrain import MLP, ArrayDataset, DataLoader, create_train_state, fit, load_digits, sgd
    loop = importlib.import_module("jaxtrain.training.fit")  # the module: jaxtrain.training.fit is the function

    images, labels = load_digits("train")
    loader = DataLoader(ArrayDataset(images[:100], labels[:100]), 32, shuffle=True, seed=1)
    feeds = {"per step": dict(steps_per_call=1), "fused": dict(steps_per_call=2),
             "device-resident": dict(steps_per_call=3, data_on_device=True)}
    out, calls = {}, []

    def recording(call):
        def record(state, *args):
            calls.append([{"shape": list(a.shape), "spec": repr(a.sharding.spec),
                           "shards": [list(s.data.shape) for s in a.addressable_shards]} for a in jax.tree.leaves(args)])
            return call(state, *args)
        return record

    loop.train_steps, loop.gather_steps = recording(loop.train_steps), recording(loop.gather_steps)
    for feed, mode in feeds.items():
        calls.clear()
        state = create_train_state(MLP(hidden=(16,)), sgd(0.01), images[:1])
        fit(state, loader, 1, log=None, mesh=devices.make_mesh(8), **mode)
        out[feed] = list(calls)
    return out


_CHILDREN = {"eight_devices": _eight_devices, "fit_inputs": _fit_inputs}

if __name__ == "__main__":
    print(json.dumps(_CHILDREN[sys.argv[1]]()))
