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
from lota.lmeval_tasks import LOCAL_DATASETS
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
# continual.later_stages overrides a method's (or the calibration's) settings for stages 2 and on.
LATER_STAGE_OVERRIDES = {
    kind: dict(settings or {}) for kind, settings in ((config.get("continual") or {}).get("later_stages") or {}).items()
}
validate(config, CONFIG_SCHEMA)  # fills in the schema's defaults

ENV = "../../envs/lota.yaml"
# The stages that generate (and lm-eval) run in vLLM's environment when the config asks for vLLM.
GENERATION_ENV = "../../envs/vllm.yaml" if config["generate"]["backend"] == "vllm" else ENV
BASE_MODEL = "work/base_model"
DATA_DIR = config["data_dir"] or os.environ.get("LOTA_DATA_DIR") or None
if DATA_DIR and re.search("[{}]", DATA_DIR):  # Snakemake would read the braces as wildcards
    raise WorkflowError(f"config key data_dir (or $LOTA_DATA_DIR): braces are not allowed in {DATA_DIR!r}")
# What ranks a mask's entries (lota.extract_mask, lota.fisher). A LoTA run's mask is the task
# vector's unless its name says otherwise (lota_gsm8k_s90_random); a RoSA run's is the Fisher's.
MASK_STRATEGIES = ("task_vector", "fisher", "gradient_mean", "base_magnitude", "random")
DEFAULT_STRATEGY = {"lota": "task_vector", "rosa": "fisher"}
# The lota.fisher score kind behind each gradient strategy.
FISHER_KINDS = {"fisher": "mean_squared", "gradient_mean": "mean"}
PERCENT = r"(?:0|[1-9]\d*)(?:\.\d*[1-9])?"
RUN_PATTERN = re.compile(
    r"^(?P<method>base|fft)_(?P<task>[a-z][a-z0-9_]*)$"
    rf"|^(?P<masked>lota|rosa)_(?P<masked_task>[a-z][a-z0-9_]*?)_s(?P<percent>{PERCENT})"
    rf"(?:_(?P<strategy>{'|'.join(MASK_STRATEGIES)}))?$"
    r"|^(?P<lora>lora)_(?P<lora_task>[a-z][a-z0-9_]*?)(?:_r(?P<rank>[1-9]\d*))?$"
)
RUN_NAMES = (
    "base_<task>, fft_<task>, lora_<task>[_r<rank>], lota_<task>_s<percent>[_<strategy>] or"
    " rosa_<task>_s<percent>[_<strategy>]"
)
Run = namedtuple("Run", "method task sparsity rank strategy")
# A task sequence: <method>_<task>-<task>[-<task>...][_s<percent> | _r<rank>]. lota retrains a
# mask at every stage; lotto keeps every stage's mask disjoint from the earlier ones; lottoflip
# too, through the official code's flipped-mask calibration.
MASKED_METHODS = ("lota", "lotto", "lottoflip")
DISJOINT_METHODS = ("lotto", "lottoflip")
SEQUENCE_PATTERN = re.compile(
    r"^(?P<method>fft|lora|lota|lotto|lottoflip)_(?P<tasks>[a-z][a-z0-9_]*?(?:-[a-z][a-z0-9_]*?)+)"
    r"(?:_s(?P<percent>(?:0|[1-9]\d*)(?:\.\d*[1-9])?)|_r(?P<rank>[1-9]\d*))?$"
)
SEQUENCE_NAMES = (
    "<method>_<task>-<task>[-...]: fft_..., lora_...[_r<rank>], or lota_/lotto_/lottoflip_..._s<percent>"
)
Sequence = namedtuple("Sequence", "method tasks sparsity rank suffix")
# A merge: <method>_<task>+<task>[+...][_s<percent>][_l<lambda>]. ta, ties, dareties and darelinear
# merge the tasks' FFT runs; lotasum adds their LoTA runs' sparse deltas, at the named sparsity.
MERGE_METHODS = {
    "ta": "task_arithmetic",
    "ties": "ties",
    "dareties": "dare_ties",
    "darelinear": "dare_linear",
    "lotasum": "sparse_sum",
}
MERGE_PATTERN = re.compile(
    rf"^(?P<method>{'|'.join(MERGE_METHODS)})_(?P<tasks>[a-z][a-z0-9_]*?(?:\+[a-z][a-z0-9_]*?)+)"
    r"(?:_s(?P<percent>(?:0|[1-9]\d*)(?:\.\d*[1-9])?))?(?:_l(?P<scale>(?:0|[1-9]\d*)(?:\.\d*[1-9])?))?$"
)
MERGE_NAMES = "<method>_<task>+<task>[+...][_l<lambda>]: ta_, ties_, dareties_, darelinear_..., or lotasum_..._s<percent>"
Merge = namedtuple("Merge", "method tasks sparsity scale runs")
PLOTS = "results/plots"


wildcard_constraints:
    task="[a-z][a-z0-9_]*",
    percent=PERCENT,
    strategy="|".join(MASK_STRATEGIES),
    fisher_kind="|".join(FISHER_KINDS.values()),
    variant=rf"[a-z][a-z0-9_]*?_s{PERCENT}(?:_(?:{'|'.join(MASK_STRATEGIES)}))?",
    run=r"[a-z][a-z0-9_.]*",
    lora_run=r"lora_[a-z][a-z0-9_]*",
    dense="fft|calibration",
    seq=r"[a-z][a-z0-9_.]*-[a-z0-9_.-]+",
    model=r"[a-z][a-z0-9_.-]*",
    kind="dense|flip",
    merge=r"[a-z][a-z0-9_.]*\+[a-z0-9_.+]+",
    name=r"[a-z][a-z0-9_.+-]*",


def parse_run(run):
    """Run(method, task, sparsity, rank, strategy) of a run name: sparsity and strategy are a masked
    method's (lota, rosa), rank a LoRA adapter's (lora, rosa)."""
    match = RUN_PATTERN.match(run)
    if not match:
        raise WorkflowError(f"run name {run!r} is not {RUN_NAMES}")
    method = match["method"] or match["masked"] or match["lora"]
    task = check_task(match["task"] or match["masked_task"] or match["lora_task"])
    check_trainable(method, task)
    sparsity = percent_to_sparsity(match["percent"]) if match["percent"] else None
    strategy = None
    if method in DEFAULT_STRATEGY:
        strategy = match["strategy"] or DEFAULT_STRATEGY[method]
        if match["strategy"] == DEFAULT_STRATEGY[method]:
            raise WorkflowError(f"run {run!r}: {strategy} is {method}'s own mask strategy: drop _{strategy}")
    rank = None
    if method in ("lora", "rosa"):
        rank = int(match["rank"] or config["lora"]["rank"])
        if match["rank"] and rank == config["lora"]["rank"]:
            raise WorkflowError(f"run {run!r}: rank {rank} is the configured one (config key lora.rank): name it lora_{task}")
    return Run(method, task, sparsity, rank, strategy)


def mask_name(task, percent, strategy):
    """A single-task mask's file stem: <task>_s<percent>, with _<strategy> unless the task vector's."""
    return f"{task}_s{percent}" + ("" if strategy == "task_vector" else f"_{strategy}")


def run_mask(run):
    """The mask file a LoTA or RoSA run trains through."""
    match = RUN_PATTERN.match(run)
    parsed = parse_run(run)
    return f"work/masks/{mask_name(parsed.task, match['percent'], parsed.strategy)}.safetensors"


def parse_sequence(name):
    """Sequence(method, tasks, sparsity, rank, suffix) of a sequence run name."""
    match = SEQUENCE_PATTERN.match(name)
    if not match:
        raise WorkflowError(f"sequence run name {name!r} is not {SEQUENCE_NAMES}")
    method, tasks = match["method"], match["tasks"].split("-")
    check_scored_tasks(f"sequence {name!r}", method, tasks, "no forgetting can be measured")
    if method in MASKED_METHODS and not match["percent"]:
        raise WorkflowError(f"sequence {name!r}: {method} needs the masks' sparsity, e.g. {name}_s90")
    if match["percent"] and method not in MASKED_METHODS or match["rank"] and method != "lora":
        raise WorkflowError(f"sequence {name!r}: _s<percent> is for {', '.join(MASKED_METHODS)}, _r<rank> for lora")
    sparsity = percent_to_sparsity(match["percent"]) if match["percent"] else None
    rank = None
    if method == "lora":
        rank = int(match["rank"] or config["lora"]["rank"])
        if match["rank"] and rank == config["lora"]["rank"]:
            raise WorkflowError(f"sequence {name!r}: rank {rank} is the configured one (config key lora.rank): drop _r{rank}")
    suffix = f"_s{match['percent']}" if match["percent"] else f"_r{match['rank']}" if match["rank"] else ""
    return Sequence(method, tasks, sparsity, rank, suffix)


def parse_merge(name):
    """Merge(method, tasks, sparsity, scale, runs) of a merge name; runs are the single-task runs merged."""
    match = MERGE_PATTERN.match(name)
    if not match:
        raise WorkflowError(f"merge name {name!r} is not {MERGE_NAMES}")
    method, tasks = match["method"], match["tasks"].split("+")
    check_scored_tasks(f"merge {name!r}", method, tasks, "the merge cannot be scored")
    if (method == "lotasum") != bool(match["percent"]):
        raise WorkflowError(f"merge {name!r}: lotasum needs its LoTA runs' sparsity (_s<percent>), the others none")
    scale = float(match["scale"]) if match["scale"] else config["merge"]["scale"]
    if match["scale"] and scale in (0, config["merge"]["scale"]):
        reason = "is the configured one (config key merge.scale)" if scale else "would merge nothing"
        raise WorkflowError(f"merge {name!r}: lambda {scale:g} {reason}: drop _l{match['scale']}")
    runs = [f"lota_{task}_s{match['percent']}" if method == "lotasum" else f"fft_{task}" for task in tasks]
    sparsity = percent_to_sparsity(match["percent"]) if match["percent"] else None
    return Merge(method, tasks, sparsity, scale, runs)


def stage_models(name):
    """The model after each stage of a sequence: stage 1 is a single-task run (LoTTO's first
    mask is plain LoTA's), stage k the sequence of the first k tasks."""
    method, tasks, _, _, suffix = parse_sequence(name)
    first = f"lota_{tasks[0]}{suffix}" if method in MASKED_METHODS else f"{method}_{tasks[0]}{suffix}"
    return [first] + [f"{method}_{'-'.join(tasks[:k])}{suffix}" for k in range(2, len(tasks) + 1)]


def is_sequence(model):
    return "-" in model


def model_path(model):
    """The HF directory of a single-task run's or a sequence's model."""
    return f"work/cl/models/{model}" if is_sequence(model) else f"work/models/{model}"


def run_path(model):
    """The training directory of a model's last stage."""
    return f"work/cl/runs/{model}" if is_sequence(model) else f"work/runs/{model}"


def stage_masks(model):
    """The masks of every stage up to a LoTA-method model, the first stage's a single-task one."""
    if not is_sequence(model):
        return [run_mask(model)]
    return stage_masks(stage_models(model)[0]) + [f"work/cl/masks/{m}.safetensors" for m in stage_models(model)[1:]]


def samples_path(model, task):
    """The samples of a model on a task; a single-task run's own task reuses its run's samples."""
    if not is_sequence(model) and parse_run(model).task == task:
        return f"work/samples/{model}.jsonl"
    return f"work/cl/samples/{model}/{task}.jsonl"


def training_method(method):
    """What a sequence method trains its stages with: fft, lora, or lota (every LoTA method)."""
    return "lota" if method in MASKED_METHODS else method


def calibration_kind(method):
    """Where a sequence stage's mask comes from: a dense run, or (lottoflip) a run on the complement."""
    return "flip" if method == "lottoflip" else "dense"


def check_task(task):
    if task not in config["tasks"]:
        raise WorkflowError(
            f"unknown task {task!r}: not under config key 'tasks' (configured: {', '.join(config['tasks'])})"
        )
    return task


def check_scored_tasks(what, method, tasks, consequence):
    """The tasks of a sequence or merge (`what`): each named once, configured, trainable and scored here."""
    if len(set(tasks)) < len(tasks):
        raise WorkflowError(f"{what} names a task twice")
    for task in tasks:
        check_trainable(method, check_task(task))
        if get_task(task).score is None:
            raise WorkflowError(f"{what}: task {task!r} has no built-in scorer, so {consequence}")


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
    """The scheduler resources of a job kind (its CPU threads go to the stage as --threads).

    A training job's process count (--processes: torchrun, FSDP2) and checkpoint interval are
    resources, not parameters, so that changing how a run goes (more GPUs, more checkpoints)
    leaves finished runs up to date.
    """
    settings = config["resources"][kind]
    scheduled = {key: value for key, value in settings.items() if key not in ("threads", "processes")}
    if kind == "train":
        scheduled["processes"] = settings.get("processes", 0) or max(settings["gpu"], 1)
        scheduled["checkpoint_every"] = settings.get("checkpoint_every", 0)
    return scheduled


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
    """The training settings of fft, lota, lora, rosa (lora's unless configured), or calibration:
    fft's with its overrides."""
    if kind == "calibration":
        return config["train"]["fft"] | CALIBRATION_OVERRIDES
    if kind == "rosa":
        return config["train"].get("rosa") or config["train"]["lora"]
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


def later_stage_settings(kind):
    """The training settings of a sequence's stages 2 and on: kind's, with continual.later_stages's overrides."""
    return train_settings(kind) | LATER_STAGE_OVERRIDES.get(kind, {})


def train_options(method, task, rank=None, settings=None):
    """CLI options of a training run: `settings` (default: the method's) and the task's length."""
    settings = settings or train_settings(method)
    settings = dict(settings, max_length=task_setting(task, "max_length"), seed=config["seed"])
    if method in ("lora", "rosa"):
        adapters = config["lora"]
        settings |= {
            "lora_rank": rank,
            "lora_alpha": adapters["alpha"],
            "lora_dropout": adapters["dropout"],
            "lora_targets": adapters["target_modules"],
        }
    return f"{cli_options(settings)} {threads_option('train')} {trust_option()}"


def masked_run_data(method):
    """An input function: the training data of the LoTA or RoSA run <method>_<variant>."""
    return lambda wildcards: f"work/data/{parse_run(f'{method}_{wildcards.variant}').task}/train.jsonl"


def mask_options():
    return cli_options({key: config["mask"][key] for key in ("granularity", "scope")})


def mask_rule_inputs(wildcards):
    """What ranks the entries of a mask <task>_s<percent>_<strategy>: gradient scores, or the base model."""
    if wildcards.strategy in FISHER_KINDS:
        return {"scores": f"work/fisher/{check_task(wildcards.task)}_{FISHER_KINDS[wildcards.strategy]}.safetensors"}
    return {"base": BASE_MODEL}


def mask_rule_options(wildcards, input):
    """extract_mask's options for a strategy: gradient_mean ranks lota.fisher's mean scores."""
    strategy = "fisher" if wildcards.strategy in FISHER_KINDS else wildcards.strategy
    sources = {key: getattr(input, key) for key in ("scores", "base") if hasattr(input, key)}
    return f"{cli_options({'strategy': strategy, **sources, 'seed': config['seed']})} {mask_options()}"


def rosa_inputs(wildcards):
    """A RoSA run's base model and data, and its mask unless it builds one after its warm-up."""
    run = f"rosa_{wildcards.variant}"
    inputs = {"model": BASE_MODEL, "data": masked_run_data("rosa")(wildcards)}
    if not config["rosa"]["mask_warmup_steps"]:
        inputs["mask"] = run_mask(run)
    return inputs


def rosa_options(wildcards, input):
    """A RoSA run's settings, with its mask, or the warm-up that builds one from its own gradients."""
    run = parse_run(f"rosa_{wildcards.variant}")
    options = train_options("rosa", run.task, run.rank)
    if hasattr(input, "mask"):
        return f"{options} {cli_options({'mask': input.mask})}"
    if run.strategy not in FISHER_KINDS:
        raise WorkflowError(
            f"run 'rosa_{wildcards.variant}': a mask built after the warm-up (config key rosa.mask_warmup_steps) "
            f"ranks gradients: use strategy fisher or gradient_mean, not {run.strategy}"
        )
    warmup = {
        "mask_warmup_steps": config["rosa"]["mask_warmup_steps"],
        "mask_sparsity": run.sparsity,
        "mask_kind": FISHER_KINDS[run.strategy],
        "mask_batches": config["mask"]["fisher"]["batches"],
        "mask_granularity": config["mask"]["granularity"],
        "mask_scope": config["mask"]["scope"],
    }
    return f"{options} {cli_options(warmup)}"


def lora_options(wildcards):
    run = parse_run(wildcards.lora_run)
    return train_options("lora", run.task, run.rank)


def lora_data(wildcards):
    return f"work/data/{parse_run(wildcards.lora_run).task}/train.jsonl"


def shape_options(sparsity, rank):
    """--sparsity of a LoTA method, --lora-rank of LoRA."""
    return cli_options({key: value for key, value in (("sparsity", sparsity), ("lora_rank", rank)) if value is not None})


def run_shape_options(run):
    parsed = parse_run(run)
    options = shape_options(parsed.sparsity, parsed.rank)
    return options + (f" --mask-strategy {parsed.strategy}" if parsed.strategy else "")


def run_weights(wildcards):
    """A run's weights files as export applies them: RoSA's sparse delta, then its adapter."""
    weights = [f"work/runs/{wildcards.run}/weights.safetensors"]
    if parse_run(wildcards.run).method == "rosa":
        weights.append(f"work/runs/{wildcards.run}/adapter.safetensors")
    return weights


def model_dir(wildcards):
    """The untrained base model for base_<task>, the run's export otherwise."""
    return BASE_MODEL if parse_run(wildcards.run).method == "base" else f"work/models/{wildcards.run}"


def eval_data(wildcards):
    return f"work/data/{parse_run(wildcards.run).task}/eval.jsonl"


def train_summary(wildcards):
    return [] if parse_run(wildcards.run).method == "base" else f"work/runs/{wildcards.run}/summary.json"


def stage_benchmarks(run):
    """STAGE=PATH of the benchmark files of every stage that led to a run."""
    method, task, _, _, strategy = parse_run(run)
    stages = {"base_model": "benchmarks/base_model.tsv", "prepare_data": f"benchmarks/prepare_data/{task}.tsv"}
    if method in ("fft", "lora"):
        stages[f"train_{method}"] = f"benchmarks/train/{run}.tsv"
    if method in DEFAULT_STRATEGY:
        stages |= mask_benchmarks(task, run_mask(run), strategy)
        stages[f"train_{method}"] = f"benchmarks/train/{run}.tsv"
    if method != "base":
        stages["export"] = f"benchmarks/export/{run}.tsv"
    stages["generate"] = f"benchmarks/generate/{run}.tsv"
    return " ".join(shlex.quote(f"{stage}={path}") for stage, path in stages.items())


def mask_benchmarks(task, mask, strategy):
    """STAGE: PATH of the jobs that built a single-task mask: the dense calibration run and the task
    vector, or the gradient scores, then extract_mask."""
    stages = {}
    if strategy == "task_vector":
        stages["calibrate"] = f"benchmarks/train/{dense_run(task)}.tsv"
        stages["task_vector"] = f"benchmarks/task_vector/{task}.tsv"
    if strategy in FISHER_KINDS:
        stages["fisher"] = f"benchmarks/fisher/{task}_{FISHER_KINDS[strategy]}.tsv"
    stages["extract_mask"] = f"benchmarks/extract_mask/{os.path.basename(mask).removesuffix('.safetensors')}.tsv"
    return stages


def task_provenance(task):
    return config["tasks"][task] | {key: task_setting(task, key) for key in ("max_length", "max_new_tokens")}


def method_provenance(method, rank, strategy="task_vector"):
    """The config values a method's training depends on (a masked method's: what built its mask too)."""
    used = {"seed": config["seed"], "data_dir": DATA_DIR, "base_model": config["base_model"], "generate": config["generate"]}
    if method == "fft":
        used["train_fft"] = config["train"]["fft"]
    if method in MASKED_METHODS or method == "rosa":
        used["mask"] = {key: value for key, value in config["mask"].items() if key != "fisher"} | {"strategy": strategy}
        if strategy == "task_vector":
            used["train_calibration"] = train_settings("calibration")
        if strategy in FISHER_KINDS:
            used["mask"]["fisher"] = config["mask"]["fisher"]
        used[f"train_{training_method(method)}"] = train_settings(training_method(method))
    if method in ("lora", "rosa"):
        used["lora"] = config["lora"] | {"rank": rank}
    if method == "lora":
        used["train_lora"] = config["train"]["lora"]
    if method == "rosa":
        used["rosa"] = config["rosa"]
    return used


def provenance(run):
    """The config values a run's result depends on, as JSON."""
    method, task, _, rank, strategy = parse_run(run)
    used = method_provenance(method, rank, strategy or "task_vector") | {"task": task_provenance(task)}
    if "train_calibration" in used:
        used["train_calibration"] |= {"run": dense_run(task)}
    return json.dumps(used, sort_keys=True)


def sequence_provenance(name):
    """The config values a sequence's result depends on, as JSON."""
    method, tasks, _, rank, _ = parse_sequence(name)
    used = method_provenance(method, rank) | {"tasks": {task: task_provenance(task) for task in tasks}}
    kind = training_method(method)
    used["later_stages"] = {f"train_{kind}": later_stage_settings(kind)}
    if method in MASKED_METHODS:
        used["train_calibration"] |= {"first_stage_run": dense_run(tasks[0])}
        used["later_stages"]["train_calibration"] = later_stage_settings("calibration")
    return json.dumps(used, sort_keys=True)


def sweep_runs(task):
    """Every run of a task's sweep: its methods, the masked ones (lota, rosa) at each configured
    sparsity with each configured mask strategy."""
    runs = []
    for method in config["sweep"]["methods"]:
        if method not in DEFAULT_STRATEGY:
            runs.append(f"{method}_{task}")
            continue
        for percent in config["sweep"]["sparsities"]:
            strategies = config["sweep"]["mask_strategies"] if method == "lota" else [DEFAULT_STRATEGY[method]]
            runs += [
                f"{method}_{task}_s{number_name(percent)}" + ("" if strategy == DEFAULT_STRATEGY[method] else f"_{strategy}")
                for strategy in strategies
            ]
    return runs


def number_name(number):
    """The run-name form of a number (a sparsity percentage, a merge's lambda): 90 and 90.0 are 90,
    99.9 stays 99.9, 0.50 is 0.5."""
    return format(Decimal(str(number)).normalize(), "f")


def sweep_results(wildcards=None):
    runs = [run for task in config["sweep"]["tasks"] for run in sweep_runs(task)]
    for run in runs:
        parse_run(run)  # an unknown or evaluation-only task fails here, before any job
    return [f"results/{run}.json" for run in runs]


def continual_results(wildcards=None):
    """Every configured method on every configured task sequence."""
    sparsity = number_name(config["continual"]["sparsity"])
    names = [
        f"{method}_{'-'.join(tasks)}" + (f"_s{sparsity}" if method in MASKED_METHODS else "")
        for tasks in config["continual"]["sequences"]
        for method in config["continual"]["methods"]
    ]
    for name in names:
        parse_sequence(name)  # an unknown, untrainable or unscored task fails here, before any job
    return [f"results/cl/{name}.json" for name in names]


def sequence_stage_inputs(wildcards):
    """A sequence's last stage starts from the model after the stage before, on its last task's data,
    through its own mask for a LoTA method."""
    method, tasks, _, _, _ = parse_sequence(wildcards.seq)
    inputs = {"model": model_path(stage_models(wildcards.seq)[-2]), "data": f"work/data/{tasks[-1]}/train.jsonl"}
    if method in MASKED_METHODS:
        inputs["mask"] = f"work/cl/masks/{wildcards.seq}.safetensors"
    return inputs


def sequence_stage_method(wildcards):
    return training_method(parse_sequence(wildcards.seq).method)


def sequence_stage_options(wildcards):
    method, tasks, _, rank, _ = parse_sequence(wildcards.seq)
    kind = sequence_stage_method(wildcards)
    return train_options(kind, tasks[-1], rank, later_stage_settings(kind))


def calibration_inputs(wildcards):
    """A later stage's calibration starts from the model before it; the flipped one trains only
    the entries that no earlier mask made trainable."""
    inputs = {"model": model_path(wildcards.model), "data": f"work/data/{check_task(wildcards.task)}/train.jsonl"}
    if wildcards.kind == "flip":
        inputs["mask"] = f"work/cl/complement_masks/{wildcards.model}.safetensors"
    return inputs


def mask_option(wildcards, input):
    return cli_options({"mask": input.mask}) if hasattr(input, "mask") else ""


def sequence_mask_inputs(wildcards):
    """The task vector of the last stage's calibration and, for lotto and lottoflip, the earlier
    stages' masks, which the new mask must not overlap."""
    method, tasks, _, _, _ = parse_sequence(wildcards.seq)
    before = stage_models(wildcards.seq)[-2]
    inputs = {"task_vector": f"work/cl/task_vectors/{calibration_kind(method)}/{before}/{tasks[-1]}.safetensors"}
    inputs["exclude"] = stage_masks(before) if method in DISJOINT_METHODS else []
    return inputs


def sequence_samples(wildcards):
    """STAGE:TASK=PATH of every stage's samples on every task; stage 0 is the base model."""
    tasks = parse_sequence(wildcards.seq).tasks
    models = [None, *stage_models(wildcards.seq)]
    return {
        f"{stage}:{task}": f"work/samples/base_{task}.jsonl" if model is None else samples_path(model, task)
        for stage, model in enumerate(models)
        for task in tasks
    }


def sequence_summaries(wildcards):
    return [f"{run_path(model)}/summary.json" for model in stage_models(wildcards.seq)]


def sequence_masks(wildcards):
    method = parse_sequence(wildcards.seq).method
    return stage_masks(wildcards.seq) if method in MASKED_METHODS else []


def sequence_benchmarks(wildcards):
    """KEY=PATH of the benchmark of every training job behind a sequence: k:train for stage k's
    training, k:calibrate for its calibration run (LoTA methods)."""
    method, tasks, _, _, _ = parse_sequence(wildcards.seq)
    models = stage_models(wildcards.seq)
    jobs = {}
    for stage, (task, model) in enumerate(zip(tasks, models), start=1):
        if method in MASKED_METHODS:
            jobs[f"{stage}:calibrate"] = (
                f"benchmarks/train/{dense_run(task)}.tsv"
                if stage == 1
                else f"benchmarks/cl/calibration/{calibration_kind(method)}/{models[stage - 2]}/{task}.tsv"
            )
        jobs[f"{stage}:train"] = f"benchmarks/{'cl/' if is_sequence(model) else ''}train/{model}.tsv"
    return " ".join(shlex.quote(f"{key}={path}") for key, path in jobs.items())


def merge_results(wildcards=None):
    """Every configured merge method on every configured task set, at lambda and each sweep lambda."""
    settings = config["merge"]
    names = []
    for tasks in settings["tasks"]:
        for method in settings["methods"]:
            name = f"{method}_{'+'.join(tasks)}" + (f"_s{number_name(settings['sparsity'])}" if method == "lotasum" else "")
            names.append(name)
            names += [f"{name}_l{number_name(scale)}" for scale in settings["sweep_scales"] if scale != settings["scale"]]
    for name in names:
        parse_merge(name)  # an unknown, untrainable or unscored task fails here, before any job
    return [f"results/merge/{name}.json" for name in names]


def merge_options(wildcards):
    merge = parse_merge(wildcards.merge)
    settings = {key: config["merge"][key] for key in ("density", "granularity")}
    return cli_options({"method": MERGE_METHODS[merge.method], "scale": merge.scale, **settings, "seed": config["seed"]})


def merge_samples(wildcards):
    """TASK=PATH of the merged model's samples on every task it merges."""
    return {task: f"work/merge/samples/{wildcards.merge}/{task}.jsonl" for task in parse_merge(wildcards.merge).tasks}


def merge_provenance(name):
    """The config values a merge's result depends on, as JSON."""
    merge = parse_merge(name)
    used = method_provenance("lota" if merge.method == "lotasum" else "fft", None)
    used |= {"tasks": {task: task_provenance(task) for task in merge.tasks}, "runs": merge.runs}
    used["merge"] = {key: config["merge"][key] for key in ("density", "granularity")} | {"scale": merge.scale}
    return json.dumps(used, sort_keys=True)


# The harnesses (lm-eval, AlpacaEval) evaluate any model the pipeline builds, named as its target is:
# a single-task run (lota_gsm8k_s90), a task sequence (lotto_gsm8k-commonsense_s90) or a merge
# (ties_gsm8k+commonsense).
LMEVAL_TASKS = "work/lmeval/tasks"


def is_merge(name):
    return "+" in name


def exported_model(name):
    """The HF directory of a model by its name; the base model for base_<task>."""
    if is_merge(name):
        parse_merge(name)
        return f"work/merge/models/{name}"
    if is_sequence(name):
        parse_sequence(name)
        return model_path(name)
    return BASE_MODEL if parse_run(name).method == "base" else model_path(name)


def model_provenance(name):
    """The config values a model depends on."""
    if is_merge(name):
        return json.loads(merge_provenance(name))
    return json.loads(sequence_provenance(name) if is_sequence(name) else provenance(name))


def harness_results(section):
    """results/<section>/<model>.json of every model listed under config key <section>.models."""
    for name in config[section]["models"]:
        exported_model(name)  # a bad name fails here, before any job
    return [f"results/{section}/{name}.json" for name in config[section]["models"]]


def lmeval_results(wildcards=None):
    return harness_results("lmeval")


def alpaca_eval_results(wildcards=None):
    return harness_results("alpaca_eval")


def lmeval_dataset_files(wildcards):
    """The local files the offline lm-eval tasks may read, so that changing them rebuilds the tasks."""
    if DATA_DIR is None:
        raise WorkflowError("offline lm-eval tasks need a local data folder (config data_dir or $LOTA_DATA_DIR)")
    files = [
        os.path.join(DATA_DIR, dataset.folder, name)
        for dataset in LOCAL_DATASETS.values()
        for name in dataset.files.values()
    ]
    return sorted(file for file in files if os.path.isfile(file))


def lmeval_inputs(wildcards):
    """The model, and the offline task folder when the tasks read a local data folder."""
    inputs = {"model": exported_model(wildcards.name)}
    if DATA_DIR is not None:
        inputs["tasks"] = LMEVAL_TASKS
    return inputs


def lmeval_options(wildcards, input):
    settings = {key: config["lmeval"][key] for key in ("tasks", "num_fewshot", "limit", "batch_size", "apply_chat_template")}
    settings = {key: value for key, value in settings.items() if value is not None}
    settings |= {"backend": config["generate"]["backend"], "seed": config["seed"]}
    if DATA_DIR is not None:
        settings["task_dir"] = input.tasks
    return cli_options(settings)


def harness_provenance(name, section, extra=None):
    """The config values a harness result depends on: the model's (which hold the data folder, seed
    and generation settings), the harness's section, and `extra`."""
    settings = {key: value for key, value in config[section].items() if key != "models"}
    return json.dumps({"model": model_provenance(name), section: settings} | (extra or {}), sort_keys=True)


def alpaca_samples(wildcards):
    """A model's outputs on the AlpacaEval instructions: an alpaca run's own samples, else generated."""
    name = wildcards.name
    check_task("alpaca")
    if not is_merge(name) and not is_sequence(name) and parse_run(name).task == "alpaca":
        return f"work/samples/{name}.jsonl"
    return f"work/alpaca_eval/samples/{name}.jsonl"


def alpaca_eval_inputs(wildcards):
    """The samples, and the local judge's model (the base model unless another is configured)."""
    inputs = {"samples": alpaca_samples(wildcards)}
    settings = config["alpaca_eval"]
    if settings["judge"] == "local":
        inputs["judge_model"] = BASE_MODEL if settings["judge_model"] == "base" else settings["judge_model"]
    return inputs


def alpaca_eval_options(wildcards, input):
    settings = {"judge": config["alpaca_eval"]["judge"], "seed": config["seed"]}
    if hasattr(input, "judge_model"):
        settings["judge_model"] = input.judge_model
    if DATA_DIR is not None:
        settings["data_dir"] = DATA_DIR
    return cli_options(settings)
