"""What a result records about how it was produced: package versions, the config values used, each
stage's wall time and peak memory (the workflow's benchmark files), and the training run's figures."""

from __future__ import annotations

import csv
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from lota.core.errors import UserError

VERSIONED_PACKAGES = [
    "lota",
    "torch",
    "transformers",
    "safetensors",
    "tokenizers",
    "snakemake",
    "vllm",
    "lm_eval",
    "alpaca_eval",
]


def stage_costs(benchmarks: list[str]) -> dict[str, dict[str, float]]:
    """Wall seconds and peak RSS (MB) per stage from Snakemake benchmark TSVs; missing files skipped."""
    costs = {}
    for entry in benchmarks:
        stage, separator, path = entry.partition("=")
        if not separator:
            raise UserError(f"--benchmark expects STAGE=PATH, got {entry!r}")
        if not Path(path).is_file():
            continue
        with open(path) as table:
            rows = list(csv.DictReader(table, delimiter="\t"))
        if rows:
            row = rows[-1]
            costs[stage] = {"wall_s": float(row["s"]), "max_rss_mb": _number(row.get("max_rss"))}
    return costs


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "-", "NA") else None
    except ValueError:
        return None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def parse_config_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"--config-json is not valid JSON: {error}") from None


TRAINING_FIGURES = (
    "steps",
    "tokens",
    "final_loss",
    "train_wall_s",
    "tokens_per_s",
    "peak_memory_mb",
    "optimizer_state_bytes",
    "device",
)


def training_figures(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The figures of a training summary that results report, with the rate it trained at (None for
    an untrained model)."""
    if not summary:
        return None
    return {key: summary.get(key) for key in TRAINING_FIGURES} | {"lr": summary.get("args", {}).get("lr")}
