"""Trackers, for real and offline: a training job and a scored result logged to TensorBoard, MLflow
(a file store) and W&B (offline mode), read back with each one's own reader."""

import json
import struct
import subprocess
import sys
from dataclasses import replace

import pytest
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from lota.core.errors import UserError
from lota.core.tracking import TrackingArgs, flat_settings, log_result, numbers, tracked
from lota.training.args import TrainArgs
from lota.training.loop import train
from tests.conftest import snakemake, tiny_workdir
from tests.test_atomic_outputs import listed_jobs
from tests.test_checkpoint import Stopped, stop_after_checkpoint


def test_step_numbersare_the_numeric_leaves_and_settings_every_leaf():
    values = {"loss": 1.5, "steps": 3, "resumed": False, "method": "lota", "ci": {"low": 0.25, "high": 0.5}}
    assert numbers(values, "train/") == {
        "train/loss": 1.5,
        "train/steps": 3.0,
        "train/ci/low": 0.25,
        "train/ci/high": 0.5,
    }
    assert flat_settings({"lr": 1e-05, "scope": ["auto"], "method": "lota", "mask": None, "lora": {"rank": 16}}) == {
        "lr": "1e-05",
        "scope": '["auto"]',
        "method": "lota",
        "mask": "null",
        "lora/rank": "16",
    }


def wandb_records(run_dir):
    """The records of an offline W&B run's .wandb file: a 7-byte header (':W&B', magic, version),
    then LevelDB log blocks of 32 KiB; each chunk has a 7-byte header (CRC, length, type: 1 whole,
    2 first, 3 middle, 4 last), and a block's tail too short for a header is padding."""
    data = next(run_dir.glob("*.wandb")).read_bytes()
    position, pending = 7, b""
    while position + 7 <= len(data):
        block_left = 32768 - position % 32768
        if block_left < 7:
            position += block_left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if length == 0 and kind == 0:  # zero padding at the end of a block
            position += block_left
            continue
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_logged(run_dir):
    """(config, {step: {key: value}}) of an offline W&B run."""
    config, history = {}, {}
    for record in wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config |= {item.key: json.loads(item.value_json) for item in record.config.update}
        elif kind == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history.setdefault(int(items.get("_step", record.history.step.num)), {}).update(items)
    return config, history


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # W&B writes its offline runs under ./wandb
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for this process's reading client too
    return TrackingArgs(tensorboard=tmp_path / "tb", mlflow=f"file:{tmp_path / 'mlruns'}", wandb="offline")


def mlflow_run(tracking, name):
    client = MlflowClient(tracking.mlflow)
    experiment = client.get_experiment_by_name(tracking.experiment)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    return client, runs


def test_a_training_job_logs_settings_every_step_and_its_summary_to_each_tracker(
    tmp_path, tiny_model, train_records, tracking
):
    args = TrainArgs(model=tiny_model, data=train_records, out=tmp_path / "run", lr=1e-3, batch_size=4)
    summary, _ = train(replace(args, **vars(tracking)))
    steps = [json.loads(line) for line in (args.out / "log.jsonl").read_text().splitlines()]
    losses, step_numbers = [step["loss"] for step in steps], [step["step"] for step in steps]
    name = str(args.out)

    events = EventAccumulator(str(tracking.tensorboard / name.lstrip("/")))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == step_numbers
    assert [event.value for event in events.Scalars("train/loss")] == pytest.approx(losses)
    assert [event.value for event in events.Scalars("train/tokens_per_s")] == pytest.approx(
        [step["tokens_per_s"] for step in steps]
    )
    assert events.Scalars("summary/final_loss")[0].value == pytest.approx(summary["final_loss"])
    assert '"lr": 0.001' in events.Tensors("settings/text_summary")[0].tensor_proto.string_val[0].decode()

    client, runs = mlflow_run(tracking, name)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [metric.step for metric in history] == step_numbers
    assert [metric.value for metric in history] == pytest.approx(losses)
    for key in ("lr", "grad_norm", "peak_memory_mb"):
        assert len(client.get_metric_history(run.info.run_id, f"train/{key}")) == len(steps), key
    assert run.data.params["lr"] == "0.001" and run.data.params["method"] == "fft"
    assert run.data.metrics["summary/steps"] == len(steps) and run.data.metrics["summary/tokens"] == summary["tokens"]

    [run_dir] = (tmp_path / "wandb").glob("offline-run-*")
    config, history = wandb_logged(run_dir)
    assert config["lr"] == 0.001 and config["method"] == "fft"
    assert [history[step]["train/loss"] for step in step_numbers] == pytest.approx(losses)
    assert history[len(steps)]["summary/final_loss"] == pytest.approx(summary["final_loss"])


def test_a_resumed_run_logs_its_earlier_steps_again(tmp_path, monkeypatch, tiny_model, train_records, tracking):
    only_mlflow = replace(tracking, tensorboard=None, wandb="")
    args = TrainArgs(
        model=tiny_model, data=train_records, out=tmp_path / "run", batch_size=2, max_steps=4, checkpoint_every=2
    )
    with monkeypatch.context() as patch:
        stop_after_checkpoint(patch, step=2)
        with pytest.raises(Stopped):
            train(replace(args, **vars(only_mlflow)))
    train(replace(args, **vars(only_mlflow)))
    client, runs = mlflow_run(only_mlflow, str(args.out))
    assert sorted(run.info.status for run in runs) == ["FAILED", "FINISHED"]  # the stopped one, the resumed one
    steps = [json.loads(line)["step"] for line in (args.out / "log.jsonl").read_text().splitlines()]
    [whole] = [run for run in runs if run.info.status == "FINISHED"]
    assert [metric.step for metric in client.get_metric_history(whole.info.run_id, "train/loss")] == steps


def test_a_result_logs_its_step_numbersand_names(tmp_path, tracking):
    result = {"run": "lota_gsm8k_s90", "task": "gsm8k", "accuracy": 0.25, "ci95": {"low": 0.1, "high": 0.4}, "n": 40}
    log_result(tracking, tmp_path / "results" / "lota_gsm8k_s90.json", result)
    client, [run] = mlflow_run(tracking, str(tmp_path / "results" / "lota_gsm8k_s90.json"))
    assert run.data.metrics == {"accuracy": 0.25, "ci95/low": 0.1, "ci95/high": 0.4, "n": 40.0}
    assert run.data.params == {"run": "lota_gsm8k_s90", "task": "gsm8k"}


def test_trackers_off_import_none_of_their_packages_and_a_bad_mode_is_named(tmp_path):
    code = (
        "import sys, lota.train, lota.evaluate, lota.continual, lota.evaluate_merge\n"
        "from lota.core.tracking import TrackingArgs, tracked\n"
        f"with tracked(TrackingArgs(), {str(tmp_path)!r}) as trackers: trackers.metrics({{'loss': 1.0}}, 1)\n"
        "print(sorted(m for m in ('tensorboard', 'mlflow', 'wandb', 'torch.utils.tensorboard') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    with pytest.raises(UserError, match="--wandb must be one of offline, online or empty, got 'cloud'"):
        with tracked(TrackingArgs(wandb="cloud"), tmp_path):
            pass


def test_the_workflow_passes_the_tracking_section_to_each_job_and_turning_it_on_reruns_nothing(
    tmp_path, tiny_model, gsm8k_dir, monkeypatch
):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for the reading client
    workdir = tiny_workdir(tmp_path, tiny_model, gsm8k_dir)
    tracking = {"tracking": {"mlflow": "file:./mlruns"}}
    done = snakemake(workdir, "--cores", "1", "results/base_gsm8k.json", overrides=tracking)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"file:{workdir / 'mlruns'}")
    [run] = client.search_runs([client.get_experiment_by_name("lota").experiment_id])
    assert run.info.run_name == "results/base_gsm8k.json"
    assert run.data.params["run"] == "base_gsm8k" and "accuracy" in run.data.metrics

    more = {"tracking": {"mlflow": "file:./mlruns", "tensorboard": "logs/tensorboard", "wandb": "offline"}}
    plan = snakemake(
        workdir, "-n", "--printshellcmds", "results/base_gsm8k.json", "results/fft_gsm8k.json", overrides=more
    )
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = {job.rule: job.command for job in listed_jobs(plan.stdout + plan.stderr)}
    assert set(jobs) == {"model_scope", "train_dense", "export", "generate", "evaluate"}  # base_gsm8k's: none
    options = ("--tensorboard logs/tensorboard", "--mlflow file:./mlruns", "--wandb offline", "--experiment lota")
    for rule in ("train_dense", "evaluate"):
        assert all(option in jobs[rule] for option in options), jobs[rule]
