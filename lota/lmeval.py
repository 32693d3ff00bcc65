"""Stage lmeval: lm-evaluation-harness (`simple_evaluate`) on an exported model.

Tasks come from an offline task folder written by `lota.lmeval_tasks` (the harness's own task
definitions over local files), or, with none, are the harness's built-in tasks reading the hub.
The backend is the harness's `hf` model on CPU, or `vllm` when vLLM is installed and a GPU is
present (the generate stage's rule). The result records each task's metrics with their standard
errors, the items scored, the shots, and what produced it: harness version, backend, device,
dtype and data files.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from lota.core.cli import arg, check_minimums, existing_file, run_main, threads_arg, trust_remote_code_arg
from lota.core.errors import UserError
from lota.core.io import read_json, write_json, write_jsonl
from lota.core.modeling import check_model_dir, device, inference_dtype, load_tokenizer, set_threads
from lota.core.tracking import TrackingArgs, log_result
from lota.evaluation.generation import choose_backend
from lota.evaluation.harness_tasks import builtin_definition, builtin_tasks
from lota.evaluation.provenance import package_versions, parse_config_json

log = logging.getLogger("lota.lmeval")
HARNESS_MODELS = {"transformers": "hf", "vllm": "vllm"}


@dataclass
class LmEvalArgs(TrackingArgs):
    model: Path = arg(help="HF model directory")
    tasks: list[str] = arg(help="lm-eval task names, e.g. gsm8k arc_easy")
    out: Path = arg(help="output results JSON")
    task_dir: Path | None = arg(None, "offline task folder from lota.lmeval_tasks; none: the built-in tasks (hub)")
    num_fewshot: int | None = arg(None, "few-shot examples per prompt; none: each task's own")
    limit: int = arg(0, "items scored per task (the first ones); 0: all")
    batch_size: int = arg(8, "requests per model call")
    apply_chat_template: bool = arg(False, "format prompts (few-shot examples as turns) with the chat template")
    backend: Literal["auto", "transformers", "vllm"] = arg("auto", "auto: vllm with a GPU, else transformers (hf)")
    samples: Path | None = arg(None, "also write every scored item (prompt, response, metrics) as JSONL")
    name: str = arg("", "the model's name in the pipeline, e.g. lota_gsm8k_s90")
    seed: int = arg(0, "seed of few-shot sampling and of the harness")
    config_json: str = arg("{}", "the config values used, as JSON")
    threads: int = threads_arg()
    trust_remote_code: bool = trust_remote_code_arg()


def harness_version() -> str:
    try:
        return metadata.version("lm_eval")
    except metadata.PackageNotFoundError:
        raise UserError("lm-eval is not installed: pip install -e '.[eval]'") from None


def task_files(args: LmEvalArgs) -> dict[str, Any]:
    """Each task's offline definition and files from the task folder, or {} for the hub."""
    if args.task_dir is None:
        return {}
    manifest = read_json(existing_file(args.task_dir / "tasks.json", "lm-eval task folder manifest"), "manifest")
    missing = [task for task in args.tasks if task not in manifest]
    if missing:
        raise UserError(f"lm-eval task {missing[0]!r} is not in the offline task folder {args.task_dir}")
    return {task: manifest[task] for task in args.tasks}


def task_metrics(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """{'metric,filter': {value, stderr}} from one task's harness results ('N/A' stderr -> None)."""
    metrics = {}
    for key, value in results.items():
        metric, separator, filter_name = key.partition(",")
        if not separator or metric.endswith("_stderr"):
            continue
        stderr = results.get(f"{metric}_stderr,{filter_name}")
        metrics[key] = {"value": value, "stderr": stderr if isinstance(stderr, int | float) else None}
    return metrics


def scored_items(samples: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The harness's per-item log, one line per (task, item, filter), without the source record."""
    return [
        {"task": task, **{key: value for key, value in item.items() if key != "doc"}}
        for task, items in samples.items()
        for item in items
    ]


def evaluate_harness(args: LmEvalArgs) -> dict[str, Any]:
    version = harness_version()
    if not args.tasks:
        raise UserError("no lm-eval tasks given (config key lmeval.tasks)")
    check_minimums(args, {"limit": 0, "num_fewshot": 0, "batch_size": 1})
    check_model_dir(args.model)
    # The harness would fail on it only after loading the model and building every request.
    if args.apply_chat_template and not load_tokenizer(args.model, args.trust_remote_code).chat_template:
        raise UserError(f"the model {args.model} has no chat template to apply (config key lmeval.apply_chat_template)")
    files = task_files(args)
    config = parse_config_json(args.config_json)
    backend = choose_backend(args.backend)
    set_threads(args.threads)
    on = device()
    dtype = str(inference_dtype(on)).removeprefix("torch.")  # the harness takes the name

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    model_args: dict[str, Any] = {
        "pretrained": str(args.model),
        "dtype": dtype,
        "trust_remote_code": args.trust_remote_code,
    }
    if backend == "vllm":
        model_args["seed"] = args.seed
    # Offline tasks include their built-in definitions by path: indexing all the harness's tasks
    # (some 15,000 YAMLs, over 10 s) is only needed for the hub's. Groups and tags are refused
    # before any work, since the result is per task.
    if args.task_dir is None:
        task_manager = builtin_tasks()
        for task in args.tasks:
            builtin_definition(task_manager.task_index, task)
    else:
        task_manager = TaskManager(include_path=str(args.task_dir), include_defaults=False)
    started = time.perf_counter()
    output = simple_evaluate(
        model=HARNESS_MODELS[backend],
        model_args=model_args,
        tasks=list(args.tasks),
        num_fewshot=args.num_fewshot,
        limit=args.limit or None,
        batch_size=args.batch_size,
        device=on.type,
        task_manager=task_manager,
        log_samples=args.samples is not None,
        apply_chat_template=args.apply_chat_template,
        fewshot_as_multiturn=args.apply_chat_template,
        random_seed=args.seed,
        numpy_random_seed=args.seed,
        torch_random_seed=args.seed,
        fewshot_random_seed=args.seed,
    )
    wall_s = time.perf_counter() - started
    tasks = {
        task: {
            "metrics": task_metrics(output["results"][task]),
            "n": output["n-samples"][task]["effective"],
            "n_total": output["n-samples"][task]["original"],
            "num_fewshot": output["n-shot"].get(task),
            "task_version": output["versions"].get(task),
            "data_files": files.get(task, {}).get("data_files", "hub"),
        }
        for task in args.tasks
    }
    result = {
        "model": args.name or str(args.model),
        "model_dir": str(args.model),
        "harness": "lm-evaluation-harness",
        "harness_version": version,
        "backend": HARNESS_MODELS[backend],
        "device": on.type,
        "dtype": dtype,
        "data": "local" if files else "hub",
        "settings": {
            "tasks": list(args.tasks),
            "num_fewshot": args.num_fewshot,
            "limit": args.limit,
            "batch_size": args.batch_size,
            "apply_chat_template": args.apply_chat_template,
            "seed": args.seed,
        },
        "tasks": tasks,
        "wall_s": wall_s,
        "config": config,
        "versions": package_versions(),
    }
    if args.samples is not None:
        write_jsonl(args.samples, json.loads(json.dumps(scored_items(output["samples"]), default=str)))
    write_json(args.out, result)
    log_result(args, args.out, result)
    for task, figures in tasks.items():
        for metric, value in figures["metrics"].items():
            log.info("%s %s: %.4f (stderr %s, n=%d)", task, metric, value["value"], value["stderr"], figures["n"])
    return result


def run(args: LmEvalArgs) -> None:
    """Run lm-evaluation-harness on a model and write its results JSON."""
    evaluate_harness(args)


if __name__ == "__main__":
    run_main(LmEvalArgs, run)
