"""The train stage's options, declared once (lota.training.args): the workflow schema's training
settings are the same declarations, and the flat TrainArgs keeps its fields, order and checks."""

import dataclasses
import math
from pathlib import Path

import pytest
import yaml

from lota.core.cli import build_parser
from lota.core.errors import UserError
from lota.training.args import (
    CONFIG_GROUPS,
    TASK_SETTINGS,
    RecipeArgs,
    TrainArgs,
    config_train_settings,
    validate,
)

SCHEMA = Path(__file__).parents[1] / "workflow" / "schemas" / "config.schema.yaml"

# TrainArgs' fields in the order they had as one flat dataclass: the order of summary.json's
# "args" and of the checkpoint fingerprint's settings, which a reordering of the groups would change.
FIELDS = [
    "model", "data", "out", "method", "mask",
    "mask_warmup_steps", "mask_sparsity", "mask_kind", "mask_batches", "mask_granularity", "mask_scope",
    "lora_rank", "lora_alpha", "lora_dropout", "lora_targets",
    "optimizer", "lr", "weight_decay", "epochs", "max_steps", "batch_size", "grad_accum", "max_length",
    "max_prompt_length", "group_by_length", "clip",
    "max_grad_norm", "warmup_steps", "loss_reduction",
    "precision", "weights", "activation_checkpointing", "attention", "compile", "optimizer_in_backward",
    "loss", "beta", "reference_free",
    "seed", "processes", "checkpoint_every", "checkpoint_dir", "threads", "trust_remote_code",
    "tensorboard", "mlflow", "wandb", "experiment", "track_name",  # trackers: last, outside the fingerprint
]  # fmt: skip


def test_the_schema_training_settings_are_the_declared_options():
    """Type, enum, bounds, default and description of every option the config sets per method.
    (Compared as values: the schema's `epochs: 1` is the CLI's 1.0, which configs have been filled with.)"""
    schema = yaml.safe_load(SCHEMA.read_text())["$defs"]["train_settings"]["properties"]
    declared = config_train_settings()
    assert list(schema) == list(declared)
    for name, prop in declared.items():
        assert schema[name] == prop, name


def test_the_config_sets_every_option_of_its_groups_but_the_task_settings():
    grouped = [field.name for group in CONFIG_GROUPS for field in dataclasses.fields(group)]
    assert [name for name in grouped if name not in TASK_SETTINGS] == list(config_train_settings())


def test_train_args_is_flat_in_the_old_order_with_every_option_documented():
    assert [field.name for field in dataclasses.fields(TrainArgs)] == FIELDS
    assert all(field.metadata["help"] for field in dataclasses.fields(TrainArgs))
    args = TrainArgs(model=Path("m"), data=Path("d"), out=Path("o"), lr=1e-3, batch_size=4)
    assert isinstance(args, RecipeArgs) and (args.lr, args.batch_size, args.grad_accum) == (1e-3, 4, 1)
    flags = [action.option_strings[0] for action in build_parser(TrainArgs, "")._actions[1:]]
    assert flags == ["--" + name.replace("_", "-") for name in FIELDS]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": 0.0}, "lr must be > 0.0, got 0.0"),
        ({"lr": 2.0}, r"lr must be in \[0.0, 1.0\], got 2.0"),
        ({"epochs": -1.0}, "epochs must be > 0, got -1.0"),
        ({"epochs": math.inf}, "epochs must be a finite number, got inf"),
        ({"weight_decay": math.nan}, r"weight_decay must be in \[0.0, 1.0\], got nan"),
        ({"max_grad_norm": 0.0}, "max_grad_norm must be >= 1e-12, got 0.0"),
        ({"mask_sparsity": 1.0}, "mask_sparsity must be < 1.0, got 1.0"),
        ({"beta": 0.0}, "beta must be >= 1e-12, got 0.0"),
        ({"processes": 0}, "processes must be >= 1, got 0"),
        ({"max_length": 1}, "max_length must be >= 2, got 1"),
    ],
)
def test_a_value_off_its_declared_bounds_is_named(tmp_path, change, message):
    with pytest.raises(UserError, match=f"^{message}$"):
        validate(TrainArgs(model=tmp_path, data=tmp_path / "missing.jsonl", out=tmp_path / "run", **change))


def test_inf_max_grad_norm_is_still_accepted(tmp_path):
    """No upper bound: the declared minimum is the only check (the data file is checked after)."""
    with pytest.raises(UserError, match="training data not found"):
        validate(TrainArgs(model=tmp_path, data=tmp_path / "none.jsonl", out=tmp_path / "run", max_grad_norm=math.inf))
