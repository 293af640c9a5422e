"""The model summary: layers, parameter counts equal to torch's, FLOPs from XLA (jaxtrain.summary, jaxtrain summary)."""

import json
import sys

import flax.linen as fnn
import jax
import numpy as np
import pytest
from flax import nnx

from jaxtrain import MLP, NNXMLP, create_train_state, sgd, summary
from jaxtrain.build import build_model
from jaxtrain.cli import commands as cli
from jaxtrain.config import MODELS, Config

summary_module = sys.modules[summary.__module__]  # jaxtrain.summary is the function; its module by name


def _sample(side=8, channels=1):
    return np.random.default_rng(0).random((1, side, side, channels), np.float32)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("side", [8, 28])
def test_the_totals_equal_torchs_parameter_count(name, side, torch):
    from jaxtrain.compare import torch_model

    result = summary(build_model(Config(model=name), 10, (side, side, 1)), _sample(side), batch_size=4)
    net = torch_model(name, side)
    assert result.params == sum(p.numel() for p in net.parameters())
    buffers = sum(b.numel() for n, b in net.named_buffers() if not n.endswith("num_batches_tracked"))
    assert result.state == buffers  # BatchNorm's running statistics: torch's buffers, not its parameters
    assert result.params_bytes == 4 * result.params


@pytest.mark.quick
def test_each_layers_output_shape_and_parameters_in_call_order():
    result = summary(build_model(Config(model="cnn"), 10, (8, 8, 1)), _sample(), batch_size=4)
    layers = {layer.path: layer for layer in result.layers}
    assert [layer.path for layer in result.layers] == [
        "Conv_0", "BatchNorm_0", "Conv_1", "BatchNorm_1", "Conv_2", "BatchNorm_2", "Dense_0", "Dense_1"]
    assert layers["Conv_1"].output_shapes == ((1, 4, 4, 64),)  # after the first pooling: 8 → 4
    assert layers["Conv_1"].params == 3 * 3 * 32 * 64  # no bias under BatchNorm
    assert layers["Dense_1"].output_shapes == ((1, 10),) and layers["Dense_1"].params == 128 * 10 + 10
    assert sum(layer.params for layer in result.layers) == result.params
    table = str(result)
    assert "Conv_1" in table and "(1, 4, 4, 64)" in table and "parameters: 110,698" in table


@pytest.mark.quick
def test_flops_per_example_come_from_xlas_cost_analysis():
    result = summary(MLP(), _sample(), batch_size=16)
    multiply_adds = 64 * 256 + 256 * 10
    # XLA counts a multiply-add as 2 FLOPs; the bias, ReLU and softmax add a little.
    assert 2 * multiply_adds <= result.forward_flops < 1.1 * 2 * multiply_adds
    assert result.train_flops > 2 * result.forward_flops  # the backward pass and Adam's update
    assert result.backend == jax.default_backend() and "FLOPs per example" in str(result)


def test_no_flops_where_the_backend_gives_no_cost_analysis(monkeypatch):
    class Lowered:
        def compile(self):
            return self

        def cost_analysis(self):
            return None

    class Step:
        def lower(self, *args):
            return Lowered()

    monkeypatch.setattr(summary_module, "train_step", Step())
    result = summary(MLP(), _sample(), batch_size=2)
    assert result.train_flops is None and result.forward_flops is None and result.params == 19_210
    assert "FLOPs: none given by the" in str(result)


class Block(fnn.Module):
    @fnn.compact
    def __call__(self, x):
        return fnn.Dense(4)(fnn.relu(fnn.Dense(8)(x)))


class Nested(fnn.Module):
    @fnn.compact
    def __call__(self, x):
        x = Block()(x.reshape(len(x), -1))
        bias = self.param("bias", fnn.initializers.zeros, (3,))  # the model's own parameter, in no layer
        return fnn.Dense(3)(x) + bias


@pytest.mark.quick
def test_a_users_linen_model_nested_to_any_depth():
    top = summary(Nested(), _sample(), batch_size=2)
    assert [(l.path, l.kind, l.params) for l in top.layers] == [("Block_0", "Block", (64 * 8 + 8) + (8 * 4 + 4)), ("Dense_0", "Dense", 15)]
    assert top.params == (64 * 8 + 8) + (8 * 4 + 4) + 15 + 3
    every = summary(Nested(), _sample(), batch_size=2, depth=None)
    # In call order: Block's Dense(8), called first, was built second (Dense_1).
    assert [l.path for l in every.layers] == ["Block_0", "Block_0/Dense_1", "Block_0/Dense_0", "Dense_0"]
    assert every.layers[1].output_shapes == ((1, 8),) and every.layers[1].params == 64 * 8 + 8


class MyModel(nnx.Module):  # README's
    def __init__(self, rngs):
        self.fc1, self.fc2 = nnx.Linear(64, 32, rngs=rngs), nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        return self.fc2(nnx.relu(self.fc1(x.reshape(x.shape[0], -1))))


@pytest.mark.quick
def test_a_users_nnx_model_and_nnxs_classes_left_as_they_were():
    call = nnx.Linear.__call__
    result = summary(MyModel(nnx.Rngs(0)), _sample(), batch_size=2)
    assert [(l.path, l.kind, l.output_shapes, l.params) for l in result.layers] == [
        ("fc1", "Linear", ((1, 32),), 64 * 32 + 32), ("fc2", "Linear", ((1, 10),), 32 * 10 + 10)]
    assert nnx.Linear.__call__ is call  # the wrapping that recorded the calls is gone


@pytest.mark.quick
def test_a_train_state_is_summarized_with_its_own_optimizer():
    state = create_train_state(NNXMLP((8, 8, 1), rngs=nnx.Rngs(0)), sgd(0.1), _sample())
    with_sgd = summary(state, _sample(), batch_size=8)
    with_adam = summary(NNXMLP((8, 8, 1), rngs=nnx.Rngs(0)), _sample(), batch_size=8)
    assert with_sgd.model == "NNXMLP" and with_sgd.params == with_adam.params
    assert with_sgd.train_flops < with_adam.train_flops  # Adam's update does more per parameter


@pytest.mark.parametrize("bad, message", [({"batch_size": 0}, "batch_size=0; expected a positive integer"),
                                          ({"depth": 0}, "depth=0; expected a positive integer")])
def test_bad_arguments_are_one_line(bad, message):
    with pytest.raises(ValueError, match=message):
        summary(MLP(), _sample(), **bad)


@pytest.mark.quick
def test_the_command_prints_the_table_and_json(capsys):
    assert cli.main(["summary", "--model", "cnn", "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert "Conv_2" in out and "parameters: 110,698" in out and "FLOPs" in out
    assert cli.main(["summary", "--model", "nnx-mlp", "--json", "--batch-size", "8"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == 64 * 256 + 256 + 256 * 10 + 10 and data["batch_size"] == 8


def test_the_command_refuses_a_bad_depth_in_one_line(capsys):
    assert cli.main(["summary", "--depth", "0"]) == 2
    assert capsys.readouterr().err.strip() == "jaxtrain summary: error: depth 0 (--depth): expected a positive integer"
