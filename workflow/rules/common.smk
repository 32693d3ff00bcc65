# Helpers shared by the rules: config validation, run-name parsing, CLI option strings.
import json
import os
import re
import shlex
from decimal import Decimal

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from lota.config import config_errors, load_schema
from lota.tasks import task_names


CONFIG_SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
config_problems = config_errors(config, load_schema(CONFIG_SCHEMA))
if config_problems:
    raise WorkflowError(config_problems[0])
unknown_tasks = sorted(set(config["tasks"]) - set(task_names()))
if unknown_tasks:
    raise WorkflowError(f"config key tasks: unknown task {unknown_tasks[0]!r}; known tasks: {', '.join(task_names())}")
validate(config, CONFIG_SCHEMA)  # fills in the schema's defaults

ENV = "../../envs/lota.yaml"
BASE_MODEL = "work/base_model"
DATA_DIR = config["data_dir"] or os.environ.get("LOTA_DATA_DIR") or None
RUN_PATTERN = re.compile(
    r"^(?P<method>base|fft)_(?P<task>[a-z][a-z0-9_]*)$"
    r"|^(?P<lota>lota)_(?P<lota_task>[a-z][a-z0-9_]*)_s(?P<percent>(?:0|[1-9]\d*)(?:\.\d*[1-9])?)$"
)


wildcard_constraints:
    task="[a-z][a-z0-9_]*",
    percent=r"(?:0|[1-9]\d*)(?:\.\d*[1-9])?",
    run=r"[a-z][a-z0-9_.]*",


def parse_run(run):
    """(method, task, sparsity or None) of a run name: base_<task>, fft_<task>, lota_<task>_s<NN>."""
    match = RUN_PATTERN.match(run)
    if not match:
        raise WorkflowError(
            f"run name {run!r} is not base_<task>, fft_<task> or lota_<task>_s<percent>"
        )
    method = match["method"] or match["lota"]
    task = check_task(match["task"] or match["lota_task"])
    sparsity = percent_to_sparsity(match["percent"]) if match["percent"] else None
    return method, task, sparsity


def check_task(task):
    if task not in config["tasks"]:
        raise WorkflowError(
            f"unknown task {task!r}: not under config key 'tasks' (configured: {', '.join(config['tasks'])})"
        )
    return task


def percent_to_sparsity(percent):
    sparsity = float(Decimal(percent) / 100)  # exact: s99.9 is 0.999, not 0.9990000000000001
    if not 0 <= sparsity < 1:
        raise WorkflowError(f"sparsity s{percent} is {sparsity}, outside [0, 1): use s0 to s99.9")
    return sparsity


def cli_options(settings):
    """--key value options for a stage CLI from a config mapping, each value shell-quoted."""
    options = []
    for key, value in settings.items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            options.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, list):
            options.append(" ".join([flag, *(shlex.quote(str(v)) for v in value)]))
        else:
            options.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(options)


def trust_option():
    return cli_options({"trust_remote_code": config["base_model"]["trust_remote_code"]})


def resources(kind):
    """The scheduler resources of a job kind (its CPU threads go to the stage as --threads)."""
    return {key: value for key, value in config["resources"][kind].items() if key != "threads"}


def threads_option(kind):
    return cli_options({"threads": config["resources"][kind].get("threads", 0)})


def local_task_files(wildcards):
    """The task's local data files as inputs, so that changing them reruns prepare_data."""
    task = check_task(wildcards.task)
    if DATA_DIR is None:
        return []
    folder = os.path.join(DATA_DIR, task)
    if not os.path.isdir(folder):
        raise WorkflowError(f"task data folder not found: {folder} (config data_dir / $LOTA_DATA_DIR)")
    return sorted(os.path.join(folder, name) for name in os.listdir(folder))


def train_options(method, task):
    settings = dict(config["train"][method], max_length=config["tasks"][task]["max_length"])
    return f"{cli_options(settings | {'seed': config['seed']})} {threads_option('train')} {trust_option()}"


def model_dir(wildcards):
    """The untrained base model for base_<task>, the run's export otherwise."""
    method, _, _ = parse_run(wildcards.run)
    return BASE_MODEL if method == "base" else f"work/models/{wildcards.run}"


def eval_data(wildcards):
    _, task, _ = parse_run(wildcards.run)
    return f"work/data/{task}/eval.jsonl"


def train_summary(wildcards):
    method, _, _ = parse_run(wildcards.run)
    return [] if method == "base" else f"work/runs/{wildcards.run}/summary.json"


def stage_benchmarks(run):
    """STAGE=PATH of the benchmark files of every stage that led to a run."""
    method, task, _ = parse_run(run)
    stages = {"base_model": "benchmarks/base_model.tsv", "prepare_data": f"benchmarks/prepare_data/{task}.tsv"}
    if method in ("fft", "lota"):
        stages["train_fft"] = f"benchmarks/train/fft_{task}.tsv"
    if method == "lota":
        percent = run.rsplit("_s", 1)[1]
        stages["task_vector"] = f"benchmarks/task_vector/{task}.tsv"
        stages["extract_mask"] = f"benchmarks/extract_mask/{task}_s{percent}.tsv"
        stages["train_lota"] = f"benchmarks/train/{run}.tsv"
    if method != "base":
        stages["export"] = f"benchmarks/export/{run}.tsv"
    stages["generate"] = f"benchmarks/generate/{run}.tsv"
    return " ".join(shlex.quote(f"{stage}={path}") for stage, path in stages.items())


def provenance(run):
    """The config values a run's result depends on, as JSON."""
    method, task, _ = parse_run(run)
    used = {
        "seed": config["seed"],
        "data_dir": DATA_DIR,
        "base_model": config["base_model"],
        "task": config["tasks"][task],
        "generate": config["generate"],
    }
    if method in ("fft", "lota"):
        used["train_fft"] = config["train"]["fft"]
    if method == "lota":
        used["mask"] = config["mask"]
        used["train_lota"] = config["train"]["lota"]
    return json.dumps(used, sort_keys=True)
