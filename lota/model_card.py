"""Stage model_card: an exported model (a run's, a sequence's or a merge's) as the folder the hub
would publish: the export's files, hard-linked (no copy), and a README.md model card.

The card's YAML is huggingface_hub's ModelCardData, the metadata the hub reads: the base model
(when it is a hub id), the library, tags (lota, the method, its sparsity or rank), the hub
datasets of the tasks, and a model-index with each task's accuracy, its 95% interval and item
count in the metric's name. The text says how the model was made, from the scored result, which
holds the run's training summary and settings. Nothing is uploaded: the folder is what an
upload (`huggingface-cli upload`) would publish.

The card is a folder of its own because the export must exist before the model is scored, and
the card holds the score.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from lota.core.cli import arg, existing_file, run_main, task_definitions_arg
from lota.core.errors import UserError
from lota.core.io import atomic_path, read_json
from lota.tasks import get_task
from lota.tasks.defined import parse_task_definitions

log = logging.getLogger("lota.model_card")

Kind = Literal["run", "sequence", "merge"]


@dataclass
class ModelCardArgs:
    model: Path = arg(help="the exported HF model folder")
    result: Path = arg(help="its scored result (results/<run>.json, results/cl/<seq>.json, results/merge/<merge>.json)")
    kind: Kind = arg(help="what the model is: a single-task run, a task sequence's last stage, or a merge")
    out: Path = arg(help="output folder: the export's files and README.md")
    base_name: str = arg(default="", help="the base model's hub id, the card's base_model (default: none)")
    task_definitions: str = task_definitions_arg()


def task_results(result: Mapping[str, Any], kind: Kind) -> dict[str, Mapping[str, Any]]:
    """task -> its accuracy entry (accuracy, correct, n, ci95) of the model the card is for."""
    if kind == "run":
        return {result["task"]: result}
    if kind == "sequence":
        return dict(result["stages"][-1]["accuracy"])  # the model after the last stage
    return dict(result["accuracy"])


def accuracy_name(entry: Mapping[str, Any]) -> str:
    low, high = entry["ci95"]
    return f"accuracy (95% CI {low:.3f} to {high:.3f}, {entry['correct']} of {entry['n']})"


def card_data(
    result: Mapping[str, Any], kind: Kind, base_name: str, definitions: Mapping[str, Mapping[str, Any]] | None = None
) -> ModelCardData:
    """The card's metadata; `definitions`: the config's own tasks, which name no hub dataset."""
    tasks = task_results(result, kind)
    hub_datasets = {task: get_task(task, definitions).hub_datasets for task in tasks}
    datasets = [dataset for task in tasks for dataset in hub_datasets[task]]
    tags = list(dict.fromkeys(["lota", result["method"], *(f"task-{task}" for task in tasks)]))
    if result.get("sparsity") is not None:
        tags.append(f"sparsity-{round(result['sparsity'] * 100, 3):g}")
    if result.get("lora_rank") is not None:
        tags.append(f"rank-{result['lora_rank']}")
    evaluations = [
        EvalResult(
            task_type="text-generation",
            task_name=task,
            dataset_type=(hub_datasets[task] or (task,))[0],
            dataset_name=task,
            dataset_split="test",
            metric_type="accuracy",
            metric_value=entry["accuracy"],
            metric_name=accuracy_name(entry),
        )
        for task, entry in tasks.items()
    ]
    return ModelCardData(
        model_name=result["run"],
        base_model=base_name or None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=tags,
        datasets=datasets or None,
        eval_results=evaluations,
    )


def how_made(result: Mapping[str, Any], kind: Kind) -> str:
    """A paragraph on how the model was made, from the result's method, settings and training figures."""
    method = result["method"]
    if kind == "merge":
        settings = ", ".join(f"{key} {value}" for key, value in (result.get("settings") or {}).items())
        return f"A `{method}` merge of the single-task runs on {', '.join(result['tasks'])} into the base model" + (
            f" ({settings})." if settings else "."
        )
    if kind == "sequence":
        last = result["stages"][-1]
        return (
            f"`{method}` trained on {', then '.join(result['tasks'])}, each stage from the model the stage"
            f" before left; this is the model after the last stage ({last['trainable_params']:,} trainable"
            f" parameters in it). Mean accuracy over the tasks: {result['final_mean_accuracy']:.3f}."
        )
    train = result.get("train") or {}
    sparsity = result.get("sparsity")
    what = {
        "fft": "full fine-tuning of every weight",
        "lora": f"LoRA adapters of rank {result.get('lora_rank')}, merged into the weights",
        "rosa": f"RoSA: LoRA adapters of rank {result.get('lora_rank')} and a sparse update, merged into the weights",
        "lota": "Lottery Ticket Adaptation (LoTA): a mask of the trainable entries"
        f" ({result.get('mask_strategy')} ranking), then only those entries trained from the base weights",
    }.get(method, method)
    density = f", {1 - sparsity:.1%} of the covered weights" if sparsity is not None else ""
    figures = ""
    if train:
        figures = (
            f" Training: {train['steps']} steps, {train['tokens']:,} tokens, learning rate {train['lr']:g},"
            f" final loss {train['final_loss']:.4f}, {train['train_wall_s']:.0f} s on {train['device']}."
        )
    return (
        f"Fine-tuned on {result['task']} by {what} ({result['trainable_params']:,} trainable parameters{density})."
        + figures
    )


def card_text(
    result: Mapping[str, Any],
    kind: Kind,
    base_name: str,
    source: Path,
    definitions: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    data = card_data(result, kind, base_name, definitions)
    rows = "\n".join(
        f"| {task} | {entry['accuracy']:.3f} | {entry['ci95'][0]:.3f} to {entry['ci95'][1]:.3f} | {entry['n']} |"
        for task, entry in task_results(result, kind).items()
    )
    versions = ", ".join(f"{package} {version}" for package, version in (result.get("versions") or {}).items())
    return f"""---
{data.to_yaml()}
---

# {result["run"]}

{how_made(result, kind)}

Base model: {base_name or result.get("base_model")}. Made with lota (Lottery Ticket Adaptation
experiments); the figures are those of `{source}`; versions: {versions}.

## Evaluation

Accuracy on each task's evaluation records, with its 95% interval (Wilson's; a combined task's
over its parts) and the number of items:

| task | accuracy | 95% interval | items |
|---|---:|---|---:|
{rows}

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("<this folder>")
tokenizer = AutoTokenizer.from_pretrained("<this folder>")
```
"""


def link_files(source: Path, target: Path) -> None:
    """Every visible file of `source` in `target` (made), hard-linked where the file system allows,
    else copied (not Snakemake's hidden timestamp of a directory output)."""
    target.mkdir()
    for path in sorted(source.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            os.link(path, target / path.name)
        except OSError:  # another file system, or one without hard links
            shutil.copy2(path, target / path.name)


def write_model_card(args: ModelCardArgs) -> Path:
    existing_file(args.model / "config.json", "exported model's config")
    result = read_json(args.result, "scored result")
    if args.kind == "run" and "task" not in result:
        raise UserError(f"{args.result} is not a single-task run's result (it has no 'task')")
    definitions = parse_task_definitions(args.task_definitions)
    # ModelCard parses its YAML as the hub would.
    card = ModelCard(card_text(result, args.kind, args.base_name, args.result, definitions))
    with atomic_path(args.out) as tmp:
        link_files(args.model, tmp)
        card.save(tmp / "README.md")
    log.info("model card for %s -> %s", result["run"], args.out / "README.md")
    return args.out


def run(args: ModelCardArgs) -> None:
    """Write an exported model with its model card, as a folder to publish."""
    write_model_card(args)


if __name__ == "__main__":
    run_main(ModelCardArgs, run)
