"""Config: each setting checked by name, the data's name included (jaxtrain.config)."""

import pytest

from jaxtrain.config import Config, ConfigError

pytestmark = pytest.mark.quick  # fast: the whole file is in the quick tier


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"dropout": -0.1}, "dropout=-0.1"),
        ({"grad_accum": 0}, "grad_accum=0"),
        ({"clip_norm": 0.0}, "clip_norm=0.0"),
        ({"schedule": "linear"}, "schedule='linear'"),
        ({"warmup_steps": -1}, "warmup_steps=-1"),
        ({"dtype": "float16"}, "dtype='float16'"),
        ({"step_size": 0}, "step_size=0"),
        ({"gamma": 0.0}, "gamma=0.0"),
    ],
)
def test_config_rejects_bad_values_by_name(fields, message):
    with pytest.raises(ValueError, match=message):
        Config(**fields)


def test_config_takes_a_users_data_and_refuses_an_unknown_name_saying_what_to_do(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    for name in ("fashion_mnist", "cifar10", f"folder:{tmp_path}", f"npz:{tmp_path / 'data.npz'}"):
        assert Config(dataset=name).dataset == name
    with pytest.raises(ConfigError) as info:
        Config(dataset="cifar11")
    assert info.value.field == "dataset" and "'cifar11' is not a tensorflow-datasets name" in info.value.expected
    assert "folder:PATH" in info.value.expected and "npz:FILE" in info.value.expected
    with pytest.raises(ConfigError, match="data_dir='x'; expected none with dataset='folder:p', which names its path"):
        Config(dataset="folder:p", data_dir="x")
