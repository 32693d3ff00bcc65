"""Experiment trackers: a job's settings, every training step's metrics, its summary and scored
results, logged to TensorBoard event files, MLflow and Weights & Biases as well as to lota's own
files (log.jsonl, summary.json, results/*.json), which stay the record the pipeline reads.

All are off by default, and a tracker's package is imported only when it is on (the `track`
extra installs them). A job logs under its name (default: its output path, such as
work/runs/lota_gsm8k_s90), which is the run's name in MLflow and W&B and its folder under the
TensorBoard directory. Only numbers are logged as metrics; settings are logged as parameters
(MLflow), the run's config (W&B) and a text summary (TensorBoard).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lota.core.cli import arg
from lota.core.errors import UserError

WANDB_MODES = ("offline", "online")
MLFLOW_BATCH = 100  # MLflow's log_batch takes at most 100 parameters (and 1,000 metrics) per call
MLFLOW_PARAM_CHARS = 6000  # MLflow's longest parameter value


@dataclass(kw_only=True)
class TrackingArgs:
    """Where a job also logs its settings, steps and results (none changes what it computes)."""

    tensorboard: Path | None = arg(None, "write TensorBoard event files under this folder, one subfolder per job")
    mlflow: str = arg("", "log to MLflow at this tracking URI: file:./mlruns, sqlite:///mlflow.db, http://... ('' off)")
    wandb: str = arg("", f"log to Weights & Biases in this mode: {', '.join(WANDB_MODES)} ('' off)")
    experiment: str = arg("lota", "the MLflow experiment and W&B project jobs log into")
    track_name: str = arg("", "the name this job logs under (default: its output path)")


TRACKING_FIELDS = tuple(field.name for field in dataclasses.fields(TrackingArgs))


def numbers(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of nested mappings and lists, as floats under '/'-joined keys and
    indices (ci95/0, ci95/1); booleans, strings and nulls left out: they are no metrics."""
    found = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, list):
            value = {str(index): item for index, item in enumerate(value)}
        if isinstance(value, Mapping):
            found |= numbers(value, f"{name}/")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found[name] = float(value)
    return found


def flat_settings(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested mapping's leaves as strings under '/'-joined keys."""
    found = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found |= flat_settings(value, f"{name}/")
        else:
            found[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    return found


class Tracker(Protocol):
    def settings(self, values: Mapping[str, Any]) -> None: ...
    def metrics(self, values: Mapping[str, float], step: int) -> None: ...
    def close(self, failed: bool) -> None: ...


class TensorBoardTracker:
    def __init__(self, folder: Path, name: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / name.lstrip("/")))  # an absolute name, inside folder too

    def settings(self, values: Mapping[str, Any]) -> None:
        self.writer.add_text("settings", f"```\n{json.dumps(values, indent=2, default=str)}\n```")

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self, failed: bool) -> None:
        self.writer.close()


class MlflowTracker:
    def __init__(self, uri: str, experiment: str, name: str):
        if uri.startswith("file:"):
            # MLflow 3 keeps the file store in maintenance mode and refuses it unless asked: a local
            # folder is what a laptop user wants, and what the tests read back.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient

        self.client = MlflowClient(uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id

    def settings(self, values: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(key, value[:MLFLOW_PARAM_CHARS]) for key, value in flat_settings(values).items()]
        for start in range(0, len(params), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=params[start : start + MLFLOW_BATCH])

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        logged = [Metric(key, value, now, step) for key, value in values.items()]
        for start in range(0, len(logged), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=logged[start : start + MLFLOW_BATCH])

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


class WandbTracker:
    def __init__(self, mode: str, experiment: str, name: str):
        import wandb

        # reinit: each job (and each test) is a run of its own, even in one process
        self.run = wandb.init(mode=mode, project=experiment, name=name, reinit="create_new")

    def settings(self, values: Mapping[str, Any]) -> None:
        self.run.config.update(dict(values), allow_val_change=True)

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class Trackers:
    """Every tracker a job's TrackingArgs turn on; with none on, each call does nothing."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def settings(self, values: Mapping[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.settings(values)

    def metrics(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """The numbers among `values` (nested mappings flattened), under `prefix`."""
        logged = numbers(values, prefix)
        for tracker in self.trackers:
            tracker.metrics(logged, step)


def check_tracking(args: TrackingArgs) -> None:
    if args.wandb and args.wandb not in WANDB_MODES:
        raise UserError(f"--wandb must be one of {', '.join(WANDB_MODES)} or empty, got {args.wandb!r}")


@contextlib.contextmanager
def tracked(args: TrackingArgs, out: Path) -> Iterator[Trackers]:
    """The job's trackers, open while it runs, each closed at the end; after an error, marked failed."""
    check_tracking(args)
    name = args.track_name or str(out)
    trackers: list[Tracker] = []
    failed = True
    try:
        if args.tensorboard is not None:
            trackers.append(TensorBoardTracker(args.tensorboard, name))
        if args.mlflow:
            trackers.append(MlflowTracker(args.mlflow, args.experiment, name))
        if args.wandb:
            trackers.append(WandbTracker(args.wandb, args.experiment, name))
        yield Trackers(trackers)
        failed = False
    finally:
        for tracker in trackers:
            tracker.close(failed)


RESULT_DETAILS = ("items", "config")  # per-item verdicts (thousands) and the config the result records


def without_details(values: Mapping[str, Any]) -> dict[str, Any]:
    """A result without its per-item verdicts and config, at any depth (a sequence's per-task ones)."""
    return {
        key: without_details(value) if isinstance(value, Mapping) else value
        for key, value in values.items()
        if key not in RESULT_DETAILS
    }


def log_result(args: TrackingArgs, out: Path, result: Mapping[str, Any]) -> None:
    """A scored result's numbers (accuracy, its interval, counts, stage times...) as metrics at
    step 0, and its strings (run, task, model) as settings; not its per-item verdicts."""
    with tracked(args, out) as trackers:
        trackers.settings({key: value for key, value in result.items() if isinstance(value, str)})
        trackers.metrics(without_details(result), step=0)
