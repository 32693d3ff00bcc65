# Helpers shared by the rules: config validation, run-name parsing, CLI option strings.
import json
import os
import re
import shlex
from collections import namedtuple
from decimal import Decimal

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from lota.config import config_errors, load_schema
from lota.tasks import get_task, task_names


CONFIG_SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
config_problems = config_errors(config, load_schema(CONFIG_SCHEMA))
if config_problems:
    raise WorkflowError(config_problems[0])
unknown_tasks = sorted(set(config["tasks"]) - set(task_names()))
if unknown_tasks:
    raise WorkflowError(f"config key tasks: unknown task {unknown_tasks[0]!r}; known tasks: {', '.join(task_names())}")
# train.calibration overrides train.fft key by key, so it is read before defaults fill it in.
CALIBRATION_OVERRIDES = dict(config["train"].get("calibration") or {})
validate(config, CONFIG_SCHEMA)  # fills in the schema's defaults

ENV = "../../envs/lota.yaml"
BASE_MODEL = "work/base_model"
DATA_DIR = config["data_dir"] or os.environ.get("LOTA_DATA_DIR") or None
RUN_PATTERN = re.compile(
    r"^(?P<method>base|fft)_(?P<task>[a-z][a-z0-9_]*)$"
    r"|^(?P<lota>lota)_(?P<lota_task>[a-z][a-z0-9_]*)_s(?P<percent>(?:0|[1-9]\d*)(?:\.\d*[1-9])?)$"
    r"|^(?P<lora>lora)_(?P<lora_task>[a-z][a-z0-9_]*?)(?:_r(?P<rank>[1-9]\d*))?$"
)
RUN_NAMES = "base_<task>, fft_<task>, lora_<task>[_r<rank>] or lota_<task>_s<percent>"
Run = namedtuple("Run", "method task sparsity rank")


wildcard_constraints:
    task="[a-z][a-z0-9_]*",
    percent=r"(?:0|[1-9]\d*)(?:\.\d*[1-9])?",
    run=r"[a-z][a-z0-9_.]*",
    lora_run=r"lora_[a-z][a-z0-9_]*",
    dense="fft|calibration",


def parse_run(run):
    """Run(method, task, sparsity, rank) of a run name; sparsity is lota's, rank lora's."""
    match = RUN_PATTERN.match(run)
    if not match:
        raise WorkflowError(f"run name {run!r} is not {RUN_NAMES}")
    method = match["method"] or match["lota"] or match["lora"]
    task = check_task(match["task"] or match["lota_task"] or match["lora_task"])
    check_trainable(method, task)
    sparsity = percent_to_sparsity(match["percent"]) if match["percent"] else None
    rank = None
    if method == "lora":
        rank = int(match["rank"] or config["lora"]["rank"])
        if match["rank"] and rank == config["lora"]["rank"]:
            raise WorkflowError(f"run {run!r}: rank {rank} is the configured one (config key lora.rank): name it lora_{task}")
    return Run(method, task, sparsity, rank)


def check_task(task):
    if task not in config["tasks"]:
        raise WorkflowError(
            f"unknown task {task!r}: not under config key 'tasks' (configured: {', '.join(config['tasks'])})"
        )
    return task


def check_trainable(method, task):
    if method != "base" and "train" not in get_task(task).splits:
        raise WorkflowError(f"task {task!r} is evaluation-only (no training split): only base_{task} can be run")


def task_setting(task, key):
    """A task's config value, else the task's own default (max_length, max_new_tokens)."""
    return config["tasks"][task].get(key) or getattr(get_task(task), key)


def scored_samples(wildcards):
    """The samples of a run whose task can be scored here (AlpacaEval judges the others)."""
    task = parse_run(wildcards.run).task
    if get_task(task).score is None:
        raise WorkflowError(
            f"task {task!r} has no built-in scorer: build work/samples/{wildcards.run}.jsonl and judge it with AlpacaEval"
        )
    return f"work/samples/{wildcards.run}.jsonl"


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
    files = []
    for name in get_task(task).data_folders():
        folder = os.path.join(DATA_DIR, name)
        if not os.path.isdir(folder):
            raise WorkflowError(f"task data folder not found: {folder} (config data_dir / $LOTA_DATA_DIR)")
        files += sorted(os.path.join(folder, file) for file in os.listdir(folder))
    return files


def train_settings(kind):
    """The training settings of fft, lota, lora, or calibration: fft's with its overrides."""
    if kind == "calibration":
        return config["train"]["fft"] | CALIBRATION_OVERRIDES
    return config["train"][kind]


def separate_calibration():
    """Whether the mask's dense run has a budget of its own, so it is not the FFT baseline."""
    return train_settings("calibration") != config["train"]["fft"]


def dense_run(task):
    """The dense run whose task vector gives a task's masks: the FFT baseline unless the
    calibration budget differs from it."""
    return f"calibration_{task}" if separate_calibration() else f"fft_{task}"


def calibration_weights(wildcards):
    return f"work/runs/{dense_run(wildcards.task)}/weights.safetensors"


def train_options(method, task, rank=None):
    settings = dict(train_settings(method), max_length=task_setting(task, "max_length"), seed=config["seed"])
    if method == "lora":
        adapters = config["lora"]
        settings |= {
            "lora_rank": rank,
            "lora_alpha": adapters["alpha"],
            "lora_dropout": adapters["dropout"],
            "lora_targets": adapters["target_modules"],
        }
    return f"{cli_options(settings)} {threads_option('train')} {trust_option()}"


def lora_options(wildcards):
    run = parse_run(wildcards.lora_run)
    return train_options("lora", run.task, run.rank)


def lora_data(wildcards):
    return f"work/data/{parse_run(wildcards.lora_run).task}/train.jsonl"


def run_shape_options(run):
    """--sparsity of a LoTA run, --lora-rank of a LoRA run."""
    _, _, sparsity, rank = parse_run(run)
    return cli_options({key: value for key, value in (("sparsity", sparsity), ("lora_rank", rank)) if value is not None})


def model_dir(wildcards):
    """The untrained base model for base_<task>, the run's export otherwise."""
    return BASE_MODEL if parse_run(wildcards.run).method == "base" else f"work/models/{wildcards.run}"


def eval_data(wildcards):
    return f"work/data/{parse_run(wildcards.run).task}/eval.jsonl"


def train_summary(wildcards):
    return [] if parse_run(wildcards.run).method == "base" else f"work/runs/{wildcards.run}/summary.json"


def stage_benchmarks(run):
    """STAGE=PATH of the benchmark files of every stage that led to a run."""
    method, task, _, _ = parse_run(run)
    stages = {"base_model": "benchmarks/base_model.tsv", "prepare_data": f"benchmarks/prepare_data/{task}.tsv"}
    if method == "lora":
        stages["train_lora"] = f"benchmarks/train/{run}.tsv"
    if method == "fft":
        stages["train_fft"] = f"benchmarks/train/{run}.tsv"
    if method == "lota":
        stages["calibrate"] = f"benchmarks/train/{dense_run(task)}.tsv"
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
    method, task, _, rank = parse_run(run)
    used = {
        "seed": config["seed"],
        "data_dir": DATA_DIR,
        "base_model": config["base_model"],
        "task": config["tasks"][task]
        | {key: task_setting(task, key) for key in ("max_length", "max_new_tokens")},
        "generate": config["generate"],
    }
    if method == "fft":
        used["train_fft"] = config["train"]["fft"]
    if method == "lota":
        used["train_calibration"] = train_settings("calibration") | {"run": dense_run(task)}
        used["mask"] = config["mask"]
        used["train_lota"] = config["train"]["lota"]
    if method == "lora":
        used["lora"] = config["lora"] | {"rank": rank}
        used["train_lora"] = config["train"]["lora"]
    return json.dumps(used, sort_keys=True)


def sweep_runs(task):
    """Every run of a task's sweep: base, FFT, LoRA and LoTA at each configured sparsity."""
    runs = [f"base_{task}", f"fft_{task}", f"lora_{task}"]
    return runs + [f"lota_{task}_s{percent_name(percent)}" for percent in config["sweep"]["sparsities"]]


def percent_name(percent):
    """The run-name form of a sparsity percentage: 90 and 90.0 are s90, 99.9 is s99.9."""
    return format(Decimal(str(percent)).normalize(), "f")


def sweep_results(wildcards=None):
    runs = [run for task in config["sweep"]["tasks"] for run in sweep_runs(task)]
    for run in runs:
        parse_run(run)  # an unknown or evaluation-only task fails here, before any job
    return [f"results/{run}.json" for run in runs]
