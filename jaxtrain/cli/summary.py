"""``python -m jaxtrain summary``: a model's layers, parameters and FLOPs (``jaxtrain.summary``), for the
model and data that ``train``'s flags name."""

from __future__ import annotations

import argparse
import json

from jaxtrain.build import initial_state
from jaxtrain.sources import registry
from jaxtrain.training import optim
from jaxtrain.config import COMPUTE_DTYPES, MODELS, Config, ConfigError
from jaxtrain.cli.flags import Help, add_config, add_data, field_defaults, from_flags
from jaxtrain.summary import summary


def add_summary(commands) -> None:
    defaults = field_defaults(Config)
    p = commands.add_parser(
        "summary", formatter_class=Help,
        help="the model's layers: output shapes and parameters, the totals, and FLOPs per example of a training step",
    )
    add_data(p, defaults)
    p.add_argument("--model", choices=MODELS, default=defaults.model, help="the network")
    p.add_argument("--dropout", type=float, default=defaults.dropout, metavar="P", help="as train --dropout")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=defaults.batch_norm,
                   help="as train --batch-norm (default: the model's)")
    p.add_argument("--dtype", choices=COMPUTE_DTYPES, default=defaults.dtype, help="compute dtype")
    p.add_argument("--optimizer", choices=optim.OPTIMIZERS, default=defaults.optimizer,
                   help="the optimizer whose update the training step's FLOPs include")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size,
                   help="the batch the steps are compiled for; FLOPs are per example of it")
    p.add_argument("--depth", type=int, default=1, help="list submodules this deep (1: the model's own layers)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    add_config(p, Config)
    p.set_defaults(handler=_summary)


def _summary(args: argparse.Namespace) -> None:
    config = from_flags(Config, args)
    if args.depth < 1:
        raise ConfigError("depth", args.depth, "a positive integer")
    images, _ = registry.load(config.dataset, "test", config.data_dir)
    sample = images[:1]
    state = initial_state(config, sample, 1, registry.info(config.dataset, config.data_dir).num_classes)
    result = summary(state, sample, batch_size=config.batch_size, depth=args.depth)
    print(json.dumps(result.to_dict()) if args.json else result)
