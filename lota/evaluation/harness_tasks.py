"""lm-evaluation-harness tasks that read a local data folder instead of the hub.

Each task is a YAML that includes the harness's own definition of that task (prompt, shots,
metrics, filters) and replaces only where its data comes from: `dataset_path: json` with
absolute `data_files`. GSM8K's local files are the hub's records as they are; ARC and
OpenBookQA, kept in the LoTA paper's format, are converted back to the hub's schema beside the
YAMLs (their answer labels become A, B, C, ...). Splits with no local file are dropped (the
harness then takes few-shot examples from the training split). The folder's `tasks.json`
lists each task's definition and files. The lmeval_tasks stage writes them; the lmeval stage
reads the harness's index through builtin_tasks.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lota.core.cli import arg, existing_file
from lota.core.errors import UserError
from lota.core.io import atomic_path, write_jsonl
from lota.tasks import read_json_records
from lota.tasks.local_datasets import LOCAL_DATASETS, LocalDataset

# Logged under the stage's name: the lmeval_tasks stage writes the tasks.
log = logging.getLogger("lota.lmeval_tasks")
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


@dataclass
class LmEvalTasksArgs:
    tasks: list[str] = arg(help="lm-eval task names, e.g. gsm8k arc_easy")
    data_dir: Path = arg(help="local task data folder (<data_dir>/<task>/...)")
    out: Path = arg(help="output folder of task YAMLs and converted data")


@functools.cache  # indexing some 15,000 task YAMLs takes over 10 s: once per process
def builtin_tasks() -> Any:
    """The harness's TaskManager over its built-in tasks."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("lm-eval is not installed: pip install -e '.[eval]'") from None
    return TaskManager()


def harness_definitions() -> dict[str, Any]:
    """The harness's index of its built-in tasks: name -> entry (kind, yaml_path, resolved cfg)."""
    return builtin_tasks().task_index


def builtin_definition(index: dict[str, Any], task: str) -> tuple[Path, dict[str, Any]]:
    """(YAML path, resolved config) of one built-in task, or a UserError naming it."""
    from lm_eval.tasks._index import Kind

    entry = index.get(task)
    if entry is None:
        raise UserError(f"unknown lm-eval task {task!r} (config key lmeval.tasks)")
    if entry.kind is not Kind.TASK or entry.yaml_path is None:
        raise UserError(f"lm-eval {task!r} is a {entry.kind.name.lower()}, not a task: name its tasks (lmeval.tasks)")
    return Path(entry.yaml_path), entry.cfg


def local_dataset(task: str, definition: dict[str, Any]) -> LocalDataset:
    key = (definition.get("dataset_path"), definition.get("dataset_name"))
    if key not in LOCAL_DATASETS:
        offline = ", ".join(f"{path} ({name})" for path, name in LOCAL_DATASETS)
        raise UserError(
            f"lm-eval task {task!r} reads {key[0]} ({key[1]}), which has no local copy; offline datasets: {offline}"
        )
    return LOCAL_DATASETS[key]


def local_records(data_dir: Path, dataset: LocalDataset, split: str) -> list[dict[str, Any]]:
    from lota.core.io import read_jsonl  # see write_offline_tasks

    path = data_dir / dataset.folder / dataset.files[split]
    what = f"{dataset.folder} {split} data"
    return read_jsonl(path, what) if path.suffix == ".jsonl" else read_json_records(path, what)


def offline_task(task: str, yaml_path: Path, definition: dict[str, Any], data_files: dict[str, str]) -> dict[str, Any]:
    """The YAML of a built-in task reading `data_files` (hub split -> absolute path)."""
    config: dict[str, Any] = {
        "include": str(yaml_path),
        "task": task,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": data_files},
    }
    for key in SPLIT_KEYS:
        if definition.get(key) is not None and definition[key] not in data_files:
            config[key] = None
    if definition.get("test_split") not in data_files and definition.get("validation_split") not in data_files:
        raise UserError(f"lm-eval task {task!r}: its evaluation split has no local file")
    return config


def write_offline_tasks(args: LmEvalTasksArgs) -> dict[str, Any]:
    """Write the offline task YAMLs (and converted data) into args.out; returns the manifest."""
    if not args.tasks:
        raise UserError("no lm-eval tasks given (config key lmeval.tasks)")
    if not args.data_dir.is_dir():
        raise UserError(f"task data folder not found: {args.data_dir}")
    index = harness_definitions()
    final = args.out.resolve()
    manifest: dict[str, Any] = {}
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        for task in dict.fromkeys(args.tasks):
            yaml_path, definition = builtin_definition(index, task)
            dataset = local_dataset(task, definition)
            data_files = {}
            for split, name in dataset.files.items():
                source = args.data_dir / dataset.folder / name
                if dataset.to_hub is None:
                    data_files[split] = str(existing_file(source, f"{dataset.folder} {split} data").resolve())
                    continue
                records = [dataset.to_hub(record) for record in local_records(args.data_dir, dataset, split)]
                converted = Path("data") / dataset.folder / f"{split}.jsonl"
                write_jsonl(tmp / converted, records)
                data_files[split] = str(final / converted)
            (tmp / f"{task}.yaml").write_text(
                yaml.safe_dump(offline_task(task, yaml_path, definition, data_files), sort_keys=False)
            )
            manifest[task] = {"definition": str(yaml_path), "data_files": data_files}
            log.info("%s: %s over %s", task, yaml_path.name, ", ".join(data_files.values()))
        (tmp / "tasks.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
