"""What the workflow builds for a name under a config: the paths a run, task sequence or merge
maps to, the inputs and command-line options of its jobs, the benchmarks behind its result, and
the config values its result depends on (its provenance).

The Snakemake rules (workflow/rules/*.smk) are thin over one Plan: their input functions and
params call its methods with wildcard values. Everything here is plain Python, tested without
Snakemake; bad names and config raise UserError with the one line the workflow prints.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lota.core.errors import UserError
from lota.core.model_source import PACKAGE_PREFIX, resolve_source
from lota.core.scope import resolve_settings
from lota.pipeline import names
from lota.pipeline.names import (
    DEFAULT_STRATEGY,
    FISHER_KINDS,
    MASKED_SEQUENCE_METHODS,
    MERGE_METHODS,
    Merge,
    Run,
    Sequence,
)
from lota.tasks import Task, get_task, task_names
from lota.tasks.defined import DefinedTask
from lota.tasks.local_datasets import LOCAL_DATASETS

BASE_MODEL = "work/base_model"
MODEL_SCOPE = "work/model_scope.json"  # the base model's weight shapes, which scopes are checked against
LMEVAL_TASKS = "work/lmeval/tasks"
PLOTS = "results/plots"
# The tasks whose evaluation records are AlpacaEval's instructions, in its order.
ALPACA_EVAL_TASKS = ("alpaca", "sharegpt4")


def cli_options(settings: Mapping[str, Any]) -> str:
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


def key_paths(paths: Mapping[str, str]) -> str:
    """KEY=PATH arguments, each shell-quoted (a stage's --benchmark and --samples)."""
    return " ".join(shlex.quote(f"{key}={path}") for key, path in paths.items())


def shape_options(sparsity: float | None, rank: int | None) -> str:
    """--sparsity of a LoTA method, --lora-rank of LoRA."""
    return cli_options(
        {key: value for key, value in (("sparsity", sparsity), ("lora_rank", rank)) if value is not None}
    )


def defined_tasks(tasks: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The definitions of the config's tasks of its own (config key tasks.<name>.define), each checked,
    its files among them; every other task must be built in."""
    definitions = {task: dict(settings["define"]) for task, settings in tasks.items() if "define" in settings}
    builtin = set(task_names())
    for task in tasks:
        if task in definitions and task in builtin:
            raise UserError(f"config key tasks.{task}.define: {task} is a built-in task; give yours another name")
        if task not in definitions and task not in builtin:
            raise UserError(
                f"config key tasks: unknown task {task!r}; known tasks: {', '.join(sorted(builtin))}"
                f" (a task of your own needs tasks.{task}.define)"
            )
    for task, definition in definitions.items():
        names.check_task_name(task)
        for split, path in DefinedTask(task, definition).files.items():
            if not path.is_file():
                raise UserError(f"config key tasks.{task}.define.{split}: no file {path}")
            if re.search("[{}]", str(path)):  # Snakemake would read the braces as wildcards
                raise UserError(f"config key tasks.{task}.define.{split}: braces are not allowed in {path}")
    return definitions


def is_sequence(model: str) -> bool:
    return names.is_sequence(model)


def model_path(model: str) -> str:
    """The HF directory of a single-task run's or a sequence's model."""
    return f"work/cl/models/{model}" if is_sequence(model) else f"work/models/{model}"


def run_path(model: str) -> str:
    """The training directory of a model's last stage."""
    return f"work/cl/runs/{model}" if is_sequence(model) else f"work/runs/{model}"


class Plan:
    """The workflow's plan under a validated config (schema defaults filled in).

    `calibration_overrides` (train.calibration) and `later_stage_overrides` (continual.later_stages)
    are read from the config before defaults fill it, since they override other keys key by key.
    """

    def __init__(
        self,
        config: dict[str, Any],
        calibration_overrides: Mapping[str, Any],
        later_stage_overrides: Mapping[str, Mapping[str, Any]],
        data_dir: str | None,
    ):
        self.config = config
        self.definitions = defined_tasks(config["tasks"])
        for task, settings in config["tasks"].items():
            if settings.get("scorer") == "official" and self.task(task).official_score is None:
                raise UserError(f"config key tasks.{task}.scorer: the official code has no scorer of task {task!r}")
        self.calibration_overrides = dict(calibration_overrides)
        self.later_stage_overrides = {kind: dict(settings) for kind, settings in later_stage_overrides.items()}
        if data_dir and re.search("[{}]", data_dir):  # Snakemake would read the braces as wildcards
            raise UserError(f"config key data_dir (or $LOTA_DATA_DIR): braces are not allowed in {data_dir!r}")
        if data_dir and not os.path.isdir(data_dir):  # checked even where every result is built
            raise UserError(f"config key data_dir (or $LOTA_DATA_DIR): no folder {data_dir}")
        self.data_dir = data_dir or None
        try:
            resolve_source(config["base_model"]["source"])  # a missing folder, file or package: before any job
        except UserError as error:
            raise UserError(f"config key base_model.source: {error}") from None

    # --- names ----------------------------------------------------------------------------

    def run(self, name: str) -> Run:
        """A single-task run's name, parsed and checked against the config."""
        run = names.parse_run(name, self.config["lora"]["rank"])
        self.check_trainable(run.method, self.check_task(run.task))
        self.seed(name)
        return run

    def sequence(self, name: str) -> Sequence:
        sequence = names.parse_sequence(name, self.config["lora"]["rank"])
        self.check_scored_tasks(f"sequence {name!r}", sequence.method, sequence.tasks, "no forgetting can be measured")
        self.seed(name)
        return sequence

    def merge(self, name: str) -> Merge:
        merge = names.parse_merge(name, self.config["merge"]["scale"])
        self.check_scored_tasks(f"merge {name!r}", merge.method, merge.tasks, "the merge cannot be scored")
        self.seed(name)
        return merge

    def seed(self, name: str) -> int:
        """The seed of a name's replicate (any model's name, or a replicate key <task>[_seed<N>]):
        its _seed<N>, else the config's base seed, which no name spells out."""
        stem, seed = names.split_seed(name)
        if seed is None:
            return self.config["seed"]
        if seed == self.config["seed"]:
            raise UserError(f"{name!r}: seed {seed} is the config's base seed (config key seed): name it {stem}")
        return seed

    def replicate(self, key: str) -> tuple[str, int]:
        """The task and seed of a replicate key, <task>[_seed<N>]."""
        return self.check_task(names.split_seed(key)[0]), self.seed(key)

    def replicate_seeds(self) -> list[int | None]:
        """The replicates the sweep, continual and merge targets build: config key seeds, the base
        seed (None: no _seed<N>) where it lists none."""
        base = self.config["seed"]
        return [None if seed == base else seed for seed in dict.fromkeys(self.config["seeds"])] or [None]

    def check_task(self, task: str) -> str:
        if task not in self.config["tasks"]:
            configured = ", ".join(self.config["tasks"])
            raise UserError(f"unknown task {task!r}: not under config key 'tasks' (configured: {configured})")
        return task

    def check_scored_tasks(self, what: str, method: str, tasks: tuple[str, ...], consequence: str) -> None:
        """The tasks of a sequence or merge (`what`): each configured, trainable and scored here."""
        for task in tasks:
            self.check_trainable(method, self.check_task(task))
            if self.task(task).score is None:
                raise UserError(f"{what}: task {task!r} has no built-in scorer, so {consequence}")

    def check_trainable(self, method: str, task: str) -> None:
        if method != "base" and "train" not in self.task(task).splits:
            raise UserError(f"task {task!r} is evaluation-only (no training split): only base_{task} can be run")

    def task_setting(self, task: str, key: str) -> Any:
        """A task's config value, else the task's own default (max_length, max_new_tokens)."""
        value = self.config["tasks"][task].get(key)
        return getattr(self.task(task), key) if value is None else value

    def task(self, name: str) -> Task:
        """A configured task: built in, or defined by the config (tasks.<name>.define)."""
        return get_task(name, self.definitions)

    def task_definitions_option(self, tasks: Iterable[str]) -> str:
        """--task-definitions: the definitions of those of `tasks` the config defines (none: empty)."""
        defined = {task: self.definitions[task] for task in tasks if task in self.definitions}
        return cli_options({"task_definitions": json.dumps(defined, sort_keys=True)}) if defined else ""

    # --- paths ----------------------------------------------------------------------------

    def run_mask(self, name: str) -> str:
        """The mask file a LoTA or RoSA run trains through."""
        return f"work/masks/{self.run(name).mask}.safetensors"

    def stage_masks(self, model: str) -> list[str]:
        """The masks of every stage up to a LoTA-method model, the first stage's a single-task one."""
        if not is_sequence(model):
            return [self.run_mask(model)]
        stages = self.sequence(model).stage_models
        return self.stage_masks(stages[0]) + [f"work/cl/masks/{m}.safetensors" for m in stages[1:]]

    def samples_path(self, model: str, task: str) -> str:
        """The samples of a model on a task; a single-task run's own task reuses its run's samples."""
        if not is_sequence(model) and self.run(model).task == task:
            return f"work/samples/{model}.jsonl"
        return f"work/cl/samples/{model}/{task}.jsonl"

    def train_data(self, run: str) -> str:
        return self.replicate_train_data(self.run(run).replicate)

    def replicate_train_data(self, key: str) -> str:
        """A replicate's training records: the base seed's from prepare_data, another seed's own subset."""
        task, seed = self.replicate(key)
        return f"work/data/{task}/train.jsonl" if key == task else f"work/data/{task}/train_seed{seed}.jsonl"

    def eval_data(self, run: str) -> str:
        return f"work/data/{self.run(run).task}/eval.jsonl"

    def train_summary(self, run: str) -> list[str] | str:
        return [] if self.run(run).method == "base" else f"work/runs/{run}/summary.json"

    def run_weights(self, run: str, folder: str | None = None) -> list[str]:
        """A run's weights files as export applies them, in its training folder (default its own,
        work/runs/<run>): RoSA's sparse delta, then its adapter."""
        folder = folder or f"work/runs/{run}"
        files = ["weights", "adapter"] if self.run(run).method == "rosa" else ["weights"]
        return [f"{folder}/{file}.safetensors" for file in files]

    def adapter_weights(self, run: str) -> str:
        """A LoTA run's sparse delta, which lota.peft_adapter writes as a PEFT Super-Tuning adapter."""
        method = self.run(run).method
        if method != "lota":
            kind = "already a PEFT LoRA adapter" if method == "lora" else "no Super-Tuning adapter"
            raise UserError(
                f"work/adapters/{run}: only LoTA runs are written as PEFT adapters; a {method} run's weights "
                f"are {kind} (its merged export is work/models/{run})"
            )
        return f"work/runs/{run}/weights.safetensors"

    def released(self, kind: str, name: str) -> dict[str, str]:
        """The export and scored result a model card folder (work/release/...) is made of."""
        if kind == "sequence":
            self.sequence(name)
            return {"model": f"work/cl/models/{name}", "result": f"results/cl/{name}.json"}
        if kind == "merge":
            self.merge(name)
            return {"model": f"work/merge/models/{name}", "result": f"results/merge/{name}.json"}
        if self.run(name).method == "base":
            raise UserError(f"work/release/{name}: the base model is no fine-tune, so it has no model card here")
        return {"model": f"work/models/{name}", "result": f"results/{name}.json"}

    def base_model_name_option(self) -> str:
        """--base-name: the source when it is a hub id, which an adapter records as its base model."""
        source = self.config["base_model"]["source"]
        is_hub_id = not source.startswith(PACKAGE_PREFIX) and not os.path.exists(os.path.expanduser(source))
        return cli_options({"base_name": source}) if is_hub_id else ""

    def model_card_options(self, tasks: Iterable[str]) -> str:
        """A model card's base model name and the definitions of its tasks the config defines."""
        return " ".join(filter(None, (self.base_model_name_option(), self.task_definitions_option(tasks))))

    def model_dir(self, run: str) -> str:
        """The untrained base model for base_<task>, the run's export otherwise."""
        return BASE_MODEL if self.run(run).method == "base" else f"work/models/{run}"

    def scored_samples(self, run: str) -> str:
        """The samples of a run whose task can be scored here (AlpacaEval judges the others)."""
        task = self.run(run).task
        if self.task(task).score is None:
            raise UserError(
                f"task {task!r} has no built-in scorer: build work/samples/{run}.jsonl and judge it with AlpacaEval"
            )
        return f"work/samples/{run}.jsonl"

    def local_task_files(self, task: str) -> list[str]:
        """The task's local data files as inputs, so that changing them reruns prepare_data."""
        self.check_task(task)
        if task in self.definitions:
            return [str(path) for path in DefinedTask(task, self.definitions[task]).files.values()]
        if self.data_dir is None:
            return []
        files, read = [], self.task(task)
        for name in read.data_folders():
            folder = os.path.join(self.data_dir, name)
            if not os.path.isdir(folder):
                if name in read.optional_parts:
                    continue
                raise UserError(f"task data folder not found: {folder} (config data_dir / $LOTA_DATA_DIR)")
            files += sorted(os.path.join(folder, file) for file in os.listdir(folder))
        return files

    # --- options shared by the stages -----------------------------------------------------

    def trust_option(self) -> str:
        return cli_options({"trust_remote_code": self.config["base_model"]["trust_remote_code"]})

    def threads_option(self, kind: str) -> str:
        return cli_options({"threads": self.config["resources"][kind].get("threads", 0)})

    def resources(self, kind: str) -> dict[str, Any]:
        """The scheduler resources of a job kind (its CPU threads go to the stage as --threads).

        A training job's process count (--processes: torchrun, FSDP2) and checkpoint interval, and
        every job's tracker options (`tracking`, which the training and scoring stages take), are
        resources, not parameters, so that changing how a run goes (more GPUs, more checkpoints, a
        tracker) leaves finished runs up to date.
        """
        settings = self.config["resources"][kind]
        scheduled = {key: value for key, value in settings.items() if key not in ("threads", "processes")}
        scheduled["tracking"] = self.tracking_options()
        if kind == "train":
            scheduled["processes"] = settings.get("processes", 0) or max(settings["gpu"], 1)
            scheduled["checkpoint_every"] = settings.get("checkpoint_every", 0)
        return scheduled

    def tracking_options(self) -> str:
        """The stages' tracker options from the config's tracking section; empty when all are off."""
        settings = self.config["tracking"]
        if not any(settings[key] for key in ("tensorboard", "mlflow", "wandb")):
            return ""
        return cli_options({key: value for key, value in settings.items() if value})

    def generate_options(self, model: str) -> str:
        """Generation settings; a replicate samples with its own seed."""
        return cli_options(self.config["generate"] | {"seed": self.seed(model)})

    def prepare_data_options(self, key: str) -> str:
        """A replicate's (key <task>[_seed<N>]) data: the subsets' sizes and formats, the base seed's
        evaluation and validation records, and the replicate's training subset."""
        task, seed = self.replicate(key)
        keys = ("train_size", "eval_size", "valid_size", "eval_subset", "prompt_format", "target_format")
        settings = {key: self.config["tasks"][task][key] for key in keys}
        options = cli_options(settings | {"seed": self.config["seed"], "train_seed": seed})
        return " ".join(filter(None, (options, self.task_definitions_option([task]))))

    def scoring_options(self, tasks: Iterable[str]) -> str:
        """The evaluation stages' options: the tasks scored by the official code's scorer, and the
        definitions of the tasks the config defines."""
        tasks = list(tasks)
        official = [task for task in tasks if self.config["tasks"][task].get("scorer") == "official"]
        options = cli_options({"official_scoring": official}) if official else ""
        return " ".join(filter(None, (options, self.task_definitions_option(tasks))))

    # --- training -------------------------------------------------------------------------

    def train_settings(self, kind: str) -> dict[str, Any]:
        """The training settings of fft, lota, lora, rosa (lora's unless configured), or
        calibration: fft's with its overrides."""
        train = self.config["train"]
        if kind == "calibration":
            return train["fft"] | self.calibration_overrides
        if kind == "rosa":
            return train.get("rosa") or train["lora"]
        return train[kind]

    def later_stage_settings(self, kind: str) -> dict[str, Any]:
        """The training settings of a sequence's stages 2 and on: kind's, with continual.later_stages's
        overrides. Where the rate is still a list, a stage trains at the one its method chose on its
        own task's validation split (later_stage_choice)."""
        return self.train_settings(kind) | self.later_stage_overrides.get(kind, {})

    def later_stage_choice(self, kind: str, run: str) -> dict[str, str]:
        """{"lr_choice": PATH} where a later stage's settings list rates: the choice of `run`, the
        single-task run of its method on its task (fft_<task> for a calibration run), among the same
        rates; else {}."""
        rates = self.later_stage_settings(kind)["lr"]
        if not isinstance(rates, list):
            return {}
        method = "fft" if kind == "calibration" else kind
        if rates != self.config["train"][method]["lr"]:
            key = (
                f"continual.later_stages.{kind}"
                if "lr" in self.later_stage_overrides.get(kind, {})
                else "train.calibration"
            )
            raise UserError(
                f"config key {key}.lr: a later stage trains at one rate, or at the one {run} chose among "
                f"train.{method}.lr, not among {rates}"
            )
        return {"lr_choice": self.lr_choice(run)}

    def dense_training_inputs(self, dense: str, key: str) -> dict[str, str]:
        """A dense run's base model and replicate data, and the FFT's learning-rate choice where
        train.fft lists rates (a calibration run with a rate of its own reads none)."""
        task = self.replicate(key)[0]
        inputs = {"model": BASE_MODEL, "data": self.replicate_train_data(key)}
        if dense == "calibration" and "lr" in self.calibration_overrides:
            return inputs
        choice = self.lr_choice(f"fft_{task}")
        return inputs | ({"lr_choice": choice} if choice else {})

    def dense_train_options(self, dense: str, key: str) -> str:
        return self.train_options(dense, key, lr_from=self.dense_training_inputs(dense, key).get("lr_choice"))

    def dense_kind(self) -> str:
        """What the dense run behind the masks is: the FFT baseline (fft), unless the calibration
        budget differs from it (calibration)."""
        return "calibration" if self.train_settings("calibration") != self.config["train"]["fft"] else "fft"

    def dense_run(self, key: str) -> str:
        """The dense run whose task vector gives a replicate's masks (key <task>[_seed<N>])."""
        self.replicate(key)
        return f"{self.dense_kind()}_{key}"

    def train_options(
        self,
        method: str,
        key: str,
        rank: int | None = None,
        settings: Mapping[str, Any] | None = None,
        lr: float | None = None,
        lr_from: str | None = None,
    ) -> str:
        """CLI options of a training run on a replicate (key <task>[_seed<N>]): `settings` (default:
        the method's), the task's length and the replicate's seed. `lr` is a candidate rate;
        `lr_from` the file of the rate chosen among the settings' rates, which the run reads."""
        task, seed = self.replicate(key)
        settings = dict(settings or self.train_settings(method))
        if lr is not None:
            settings["lr"] = lr
        elif lr_from is not None:
            del settings["lr"]
            settings["lr_from"] = lr_from
        elif isinstance(settings["lr"], list):
            raise UserError(f"{method} on {task} trains at one learning rate, but its settings list {settings['lr']}")
        lengths = {key: self.task_setting(task, key) for key in ("max_length", "max_prompt_length")}
        settings |= lengths | {"seed": seed}
        if method in names.ADAPTER_METHODS:
            adapters = self.config["lora"]
            settings |= {
                "lora_rank": rank,
                "lora_alpha": adapters["alpha"],
                "lora_dropout": adapters["dropout"],
                "lora_targets": adapters["target_modules"],
            }
        return f"{cli_options(settings)} {self.threads_option('train')} {self.trust_option()}"

    def run_training_inputs(self, run: str) -> dict[str, str]:
        """A single-task run's base model and data; its mask (lota, and rosa unless it builds one after
        its warm-up); and the learning-rate choice it reads where its method lists rates."""
        parsed = self.run(run)
        inputs = {"model": BASE_MODEL, "data": self.train_data(run)}
        if parsed.method == "lota" or parsed.method == "rosa" and not self.config["rosa"]["mask_warmup_steps"]:
            inputs["mask"] = self.run_mask(run)
        choice = self.lr_choice(run)
        return inputs | ({"lr_choice": choice} if choice else {})

    def run_train_options(self, run: str, lr: float | None = None) -> str:
        """The training options of a single-task fft, lota (its mask first) or lora run: at `lr`, a
        candidate rate, else at its method's rate or the one chosen among its rates."""
        parsed = self.run(run)
        if parsed.method == "rosa":
            return self.rosa_options(run, lr)
        inputs = self.run_training_inputs(run)
        options = self.train_options(
            parsed.method, parsed.replicate, parsed.rank, lr=lr, lr_from=inputs.get("lr_choice")
        )
        return f"{mask_option(inputs)}{options}"

    def rosa_options(self, run: str, lr: float | None = None) -> str:
        """A RoSA run's settings, with its mask, or the warm-up that builds one from its own gradients."""
        parsed = self.run(run)
        inputs = self.run_training_inputs(run)
        options = self.train_options("rosa", parsed.replicate, parsed.rank, lr=lr, lr_from=inputs.get("lr_choice"))
        if "mask" in inputs:
            return f"{options} {cli_options({'mask': inputs['mask']})}"
        if parsed.strategy not in FISHER_KINDS:
            raise UserError(
                f"run {run!r}: a mask built after the warm-up (config key rosa.mask_warmup_steps) "
                f"ranks gradients: use strategy fisher or gradient_mean, not {parsed.strategy}"
            )
        mask = self.config["mask"]
        warmup = {
            "mask_warmup_steps": self.config["rosa"]["mask_warmup_steps"],
            "mask_sparsity": parsed.sparsity,
            "mask_kind": FISHER_KINDS[parsed.strategy],
            "mask_batches": mask["fisher"]["batches"],
            "mask_granularity": mask["granularity"],
            "mask_scope": mask["scope"],
        }
        return f"{options} {cli_options(warmup)}"

    # --- learning rates chosen on the validation split -------------------------------------

    def lr_choice(self, run: str) -> str | None:
        """Where a run's method lists learning rates (train.<method>.lr), the file of the one chosen
        on the validation split, results/lr/<run>.json, shared by the run's seeds; else None."""
        parsed = self.run(run)
        if parsed.method == "base" or not isinstance(self.train_settings(parsed.method)["lr"], list):
            return None
        return f"results/lr/{names.split_seed(run)[0]}.json"

    def lr_choices(self, run: str) -> list[str]:
        return [choice] if (choice := self.lr_choice(run)) else []

    def lr_candidates(self, run: str) -> dict[str, str]:
        """RATE -> the validation result of the base seed's run trained at each of its method's rates."""
        parsed = self.run(run)
        if parsed.seed is not None:
            stem = names.split_seed(run)[0]
            raise UserError(f"{run!r}: the base seed's runs choose the learning rate: name it {stem}")
        rates = self.train_settings(parsed.method)["lr"]
        if not isinstance(rates, list):
            raise UserError(f"run {run!r}: train.{parsed.method}.lr is one rate, so there is none to choose")
        if not self.config["tasks"][parsed.task]["valid_size"]:
            raise UserError(
                f"config key tasks.{parsed.task}.valid_size: train.{parsed.method}.lr lists rates, which are "
                "chosen on the validation split; give it records"
            )
        self.scored_samples(run)
        return {
            names.number_name(rate): f"work/lr_search/results/{run}/lr{names.number_name(rate)}.json" for rate in rates
        }

    def valid_data(self, run: str) -> str:
        return f"work/data/{self.run(run).task}/valid.jsonl"

    def candidate_weights(self, run: str, lr: str) -> list[str]:
        """A candidate rate's weights files as export applies them."""
        return self.run_weights(run, f"work/lr_search/runs/{run}/lr{lr}")

    def candidate_inputs(self, run: str) -> dict[str, str]:
        """A candidate rate's training inputs: its run's, but the choice it is a candidate for."""
        return {key: path for key, path in self.run_training_inputs(run).items() if key != "lr_choice"}

    def candidate_options(self, run: str, lr: str) -> str:
        return self.run_train_options(run, float(lr))

    def candidate_jobs(self, run: str, lr: str) -> dict[str, str]:
        """STAGE: PATH of the benchmarks of a candidate rate's own training, export and generation."""
        method = self.run(run).method
        jobs = {f"train_{method}": "train", "export": "export", "generate": "generate"}
        return {stage: f"benchmarks/lr_search/{job}/{run}/lr{lr}.tsv" for stage, job in jobs.items()}

    def candidate_provenance(self, run: str, lr: str) -> str:
        """The config values a candidate's validation result depends on: its run's, at its rate."""
        return json.dumps(json.loads(self.provenance(run)) | {"lr": float(lr), "split": "validation"}, sort_keys=True)

    # --- masks ----------------------------------------------------------------------------

    def checked_model_scope(self, path: str) -> str:
        """`path`, the base model's weight shapes (stage model_scope), once mask.scope and
        lora.target_modules each cover one of them; a UserError naming the key of one that does not."""
        shapes = json.loads(Path(path).read_text())["shapes"]
        resolve_settings(shapes, self.config["mask"]["scope"], self.config["lora"]["target_modules"])
        return path

    def mask_options(self) -> str:
        return cli_options({key: self.config["mask"][key] for key in ("granularity", "scope", "rule")})

    def fisher_options(self, key: str) -> str:
        """Gradient scores on a replicate's (key <task>[_seed<N>]) training batches."""
        task, seed = self.replicate(key)
        settings = {
            "scope": self.config["mask"]["scope"],
            "max_length": self.task_setting(task, "max_length"),
            "seed": seed,
        }
        return cli_options(self.config["mask"]["fisher"] | settings)

    def mask_rule_inputs(self, key: str, strategy: str) -> dict[str, str]:
        """What ranks the entries of a mask <task>[_seed<N>]_s<percent>_<strategy>: the replicate's
        gradient scores, or the base model."""
        self.replicate(key)
        if strategy in FISHER_KINDS:
            return {"scores": f"work/fisher/{key}_{FISHER_KINDS[strategy]}.safetensors"}
        return {"base": BASE_MODEL}

    def mask_rule_options(self, key: str, strategy: str) -> str:
        """extract_mask's options for a strategy: gradient_mean ranks lota.fisher's mean scores; a
        random mask draws from the replicate's seed."""
        sources = self.mask_rule_inputs(key, strategy)
        settings = {"strategy": names.ranking(strategy), **sources, "seed": self.replicate(key)[1]}
        return f"{cli_options(settings)} {self.mask_options()}"

    # --- evaluation of a single-task run --------------------------------------------------

    def run_shape_options(self, run: str) -> str:
        parsed = self.run(run)
        options = shape_options(parsed.sparsity, parsed.rank)
        return options + (f" --mask-strategy {parsed.strategy}" if parsed.strategy else "")

    def stage_benchmarks(self, run: str) -> str:
        """STAGE=PATH of the benchmark files of every stage that led to a run."""
        parsed = self.run(run)
        method, task = parsed.method, parsed.task
        stages = {"base_model": "benchmarks/base_model.tsv", "prepare_data": f"benchmarks/prepare_data/{task}.tsv"}
        if parsed.seed is not None and method != "base":
            stages["replicate_data"] = f"benchmarks/prepare_data/{parsed.replicate}.tsv"
        if method in ("fft", "lora"):
            stages[f"train_{method}"] = f"benchmarks/train/{run}.tsv"
        if method in DEFAULT_STRATEGY:
            stages |= self.mask_benchmarks(parsed.replicate, parsed.mask, parsed.strategy)
            stages[f"train_{method}"] = f"benchmarks/train/{run}.tsv"
        if method != "base":
            stages["export"] = f"benchmarks/export/{run}.tsv"
        stages["generate"] = f"benchmarks/generate/{run}.tsv"
        choices = self.lr_choices(run)
        if parsed.strategy == "task_vector":  # and the rate of the calibration run behind the mask
            choices += [self.dense_training_inputs(self.dense_kind(), parsed.replicate).get("lr_choice")]
        return key_paths(stages | self.lr_search_benchmarks([choice for choice in choices if choice]))

    def lr_search_benchmarks(self, choices: list[str]) -> dict[str, str]:
        """STAGE=PATH of the jobs behind learning-rate choices (results/lr/<run>.json): every
        candidate rate's training, export and generation, and the choice."""
        stages = {}
        for choice in choices:
            run = Path(choice).stem
            for rate in self.lr_candidates(run):
                jobs = self.candidate_jobs(run, rate)
                stages |= {f"lr_search:{run}:lr{rate}:{stage}": path for stage, path in jobs.items()}
            stages[f"select_lr:{run}"] = f"benchmarks/select_lr/{run}.tsv"
        return stages

    def mask_benchmarks(self, key: str, mask: str, strategy: str) -> dict[str, str]:
        """STAGE: PATH of the jobs that built a replicate's single-task mask: the dense calibration
        run and the task vector, or the gradient scores, then extract_mask."""
        stages = {}
        if strategy == "task_vector":
            stages["calibrate"] = f"benchmarks/train/{self.dense_run(key)}.tsv"
            stages["task_vector"] = f"benchmarks/task_vector/{key}.tsv"
        if strategy in FISHER_KINDS:
            stages["fisher"] = f"benchmarks/fisher/{key}_{FISHER_KINDS[strategy]}.tsv"
        stages["extract_mask"] = f"benchmarks/extract_mask/{mask}.tsv"
        return stages

    def task_provenance(self, task: str) -> dict[str, Any]:
        return self.config["tasks"][task] | {
            key: self.task_setting(task, key) for key in ("max_length", "max_new_tokens")
        }

    def method_provenance(
        self, method: str, rank: int | None, seed: int, strategy: str = "task_vector"
    ) -> dict[str, Any]:
        """The config values a method's training depends on (a masked method's: what built its mask
        too); `seed` is the replicate's."""
        config = self.config
        used = {
            "protocol": config["protocol"],
            "seed": seed,
            "data_dir": self.data_dir,
            "base_model": config["base_model"],
            "generate": config["generate"],
        }
        if method == "fft":
            used["train_fft"] = config["train"]["fft"]
        if method in MASKED_SEQUENCE_METHODS or method == "rosa":
            used["mask"] = {key: value for key, value in config["mask"].items() if key != "fisher"} | {
                "strategy": strategy
            }
            if strategy == "task_vector":
                used["train_calibration"] = self.train_settings("calibration")
            if strategy in FISHER_KINDS:
                used["mask"]["fisher"] = config["mask"]["fisher"]
            kind = training_method(method)
            used[f"train_{kind}"] = self.train_settings(kind)
        if method in names.ADAPTER_METHODS:
            used["lora"] = config["lora"] | {"rank": rank}
        if method == "lora":
            used["train_lora"] = config["train"]["lora"]
        if method == "rosa":
            used["rosa"] = config["rosa"]
        return used

    def provenance(self, run: str) -> str:
        """The config values a run's result depends on, as JSON."""
        parsed = self.run(run)
        used = self.method_provenance(parsed.method, parsed.rank, self.seed(run), parsed.strategy or "task_vector")
        used |= {"task": self.task_provenance(parsed.task)}
        if "train_calibration" in used:
            used["train_calibration"] |= {"run": self.dense_run(parsed.replicate)}
        return json.dumps(used, sort_keys=True)

    # --- the sweep ------------------------------------------------------------------------

    def sweep_runs(self, task: str) -> list[str]:
        """Every run of a task's sweep: its methods, the masked ones (lota, rosa) at each
        configured sparsity with each configured mask strategy."""
        sweep = self.config["sweep"]
        runs = []
        for seed in self.replicate_seeds():
            for method in sweep["methods"]:
                if method not in DEFAULT_STRATEGY:
                    runs.append(Run(method, task, seed=seed).name)
                    continue
                strategies = sweep["mask_strategies"] if method == "lota" else [DEFAULT_STRATEGY[method]]
                for percent in sweep["sparsities"]:
                    percent = names.number_name(percent)
                    runs += [Run(method, task, percent, strategy, seed=seed).name for strategy in strategies]
        return runs

    def sweep_results(self) -> list[str]:
        runs = [run for task in self.config["sweep"]["tasks"] for run in self.sweep_runs(task)]
        for run in runs:
            self.run(run)  # an unknown or evaluation-only task fails here, before any job
            if self.lr_choice(run):
                self.lr_candidates(names.split_seed(run)[0])  # and rates with no validation split to choose on
        return [f"results/{run}.json" for run in runs]

    # --- the report -----------------------------------------------------------------------

    def report_masks(self) -> list[str]:
        """The single-task masks of the sweep's and the merges' runs (every seed's), whose agreement the
        report gives."""
        merged = [run for path in self.merge_results() for run in self.merge(Path(path).stem).runs]
        runs = [Path(path).stem for path in self.sweep_results()] + merged
        return sorted({self.run_mask(name) for name in runs if "mask" in self.run_training_inputs(name)})

    def report_sequence_masks(self) -> list[str]:
        """The masks of the sequences' later stages (every seed's), whose overlap across seeds the report gives."""
        sequences = [Path(path).stem for path in self.continual_results()]
        return sorted({mask for name in sequences for mask in self.sequence_masks(name)[1:]})

    def report_pairs(self) -> list[str]:
        """A:B of each pair config key report.pairs names: two methods scored on the same items."""
        pairs = []
        for first, second in self.config["report"]["pairs"]:
            for name in (first, second):
                if names.split_seed(name)[1] is not None:
                    raise UserError(
                        f"config key report.pairs: name {name!r} without _seed<N>: the report pairs every seed"
                    )
            if self.scored_tasks(first) != self.scored_tasks(second):
                raise UserError(f"config key report.pairs: {first} and {second} are not scored on the same tasks")
            pairs.append(f"{first}:{second}")
        return pairs

    def scored_tasks(self, name: str) -> tuple[str, ...]:
        """The tasks a run, sequence or merge is scored on (a name checked against the config)."""
        if names.is_merge(name):
            return self.merge(name).tasks
        return self.sequence(name).tasks if is_sequence(name) else (self.run(name).task,)

    # --- task sequences -------------------------------------------------------------------

    def continual_results(self) -> list[str]:
        """Every configured method on every configured task sequence."""
        continual = self.config["continual"]
        percent = names.number_name(continual["sparsity"])
        sequences = [
            Sequence(method, tuple(tasks), percent if method in MASKED_SEQUENCE_METHODS else None, seed=seed).name
            for seed in self.replicate_seeds()
            for tasks in continual["sequences"]
            for method in continual["methods"]
        ]
        for name in sequences:
            self.sequence(name)  # an unknown, untrainable or unscored task fails here, before any job
        return [f"results/cl/{name}.json" for name in sequences]

    def sequence_stage_inputs(self, name: str) -> dict[str, str]:
        """A sequence's last stage starts from the model after the stage before, on its last task's
        data, through its own mask for a LoTA method."""
        sequence = self.sequence(name)
        data = self.replicate_train_data(sequence.replicate(sequence.tasks[-1]))
        inputs = {"model": model_path(sequence.stage_models[-2]), "data": data}
        if sequence.method in MASKED_SEQUENCE_METHODS:
            inputs["mask"] = f"work/cl/masks/{name}.safetensors"
        return inputs | self.later_stage_choice(sequence.training_method, sequence.single_task_run(sequence.tasks[-1]))

    def sequence_stage_options(self, name: str) -> str:
        sequence = self.sequence(name)
        kind = sequence.training_method
        settings = self.later_stage_settings(kind)
        inputs = self.sequence_stage_inputs(name)
        replicate = sequence.replicate(sequence.tasks[-1])
        options = self.train_options(kind, replicate, sequence.rank, settings, lr_from=inputs.get("lr_choice"))
        return f"{mask_option(inputs)}{options}"

    def model_replicate(self, model: str, task: str) -> str:
        """The replicate key of `task` in a model's replicate: <task>[_seed<N>]."""
        return self.check_task(task) + names.seed_suffix(names.split_seed(model)[1])

    def calibration_inputs(self, kind: str, model: str, task: str) -> dict[str, str]:
        """A later stage's calibration starts from the model before it; the flipped one trains only
        the entries that no earlier mask made trainable."""
        inputs = {"model": model_path(model), "data": self.replicate_train_data(self.model_replicate(model, task))}
        if kind == "flip":
            inputs["mask"] = f"work/cl/complement_masks/{model}.safetensors"
        return inputs | self.later_stage_choice("calibration", f"fft_{self.check_task(task)}")

    def calibration_options(self, kind: str, model: str, task: str) -> str:
        settings = self.later_stage_settings("calibration")
        inputs = self.calibration_inputs(kind, model, task)
        replicate = self.model_replicate(model, task)
        options = self.train_options("calibration", replicate, settings=settings, lr_from=inputs.get("lr_choice"))
        return f"{mask_option(inputs)}{options}"

    def sequence_mask_inputs(self, name: str) -> dict[str, Any]:
        """The task vector of the last stage's calibration and, for lotto and lottoflip, the earlier
        stages' masks, which the new mask must not overlap."""
        sequence = self.sequence(name)
        before = sequence.stage_models[-2]
        kind = sequence.calibration_kind
        inputs: dict[str, Any] = {
            "task_vector": f"work/cl/task_vectors/{kind}/{before}/{sequence.tasks[-1]}.safetensors"
        }
        inputs["exclude"] = self.stage_masks(before) if sequence.method in names.DISJOINT_METHODS else []
        return inputs

    def sequence_samples(self, name: str) -> dict[str, str]:
        """STAGE:TASK -> PATH of every stage's samples on every task; stage 0 is the base model."""
        sequence = self.sequence(name)
        return {
            f"{stage}:{task}": self.samples_path(model or f"base_{sequence.replicate(task)}", task)
            for stage, model in enumerate([None, *sequence.stage_models])
            for task in sequence.tasks
        }

    def sequence_summaries(self, name: str) -> list[str]:
        return [f"{run_path(model)}/summary.json" for model in self.sequence(name).stage_models]

    def sequence_masks(self, name: str) -> list[str]:
        return self.stage_masks(name) if self.sequence(name).method in MASKED_SEQUENCE_METHODS else []

    def sequence_benchmarks(self, name: str) -> str:
        """KEY=PATH of the benchmark of every training job behind a sequence: k:train for stage k's
        training, k:calibrate for its calibration run (LoTA methods)."""
        sequence = self.sequence(name)
        models = sequence.stage_models
        jobs = {}
        for stage, (task, model) in enumerate(zip(sequence.tasks, models, strict=True), start=1):
            if sequence.method in MASKED_SEQUENCE_METHODS:
                jobs[f"{stage}:calibrate"] = (
                    f"benchmarks/train/{self.dense_run(sequence.replicate(task))}.tsv"
                    if stage == 1
                    else f"benchmarks/cl/calibration/{sequence.calibration_kind}/{models[stage - 2]}/{task}.tsv"
                )
            jobs[f"{stage}:train"] = f"benchmarks/{'cl/' if is_sequence(model) else ''}train/{model}.tsv"
        return key_paths(jobs)

    def sequence_provenance(self, name: str) -> str:
        """The config values a sequence's result depends on, as JSON."""
        sequence = self.sequence(name)
        used = self.method_provenance(sequence.method, sequence.rank, self.seed(name))
        used |= {"tasks": {task: self.task_provenance(task) for task in sequence.tasks}}
        kind = sequence.training_method
        used["later_stages"] = {f"train_{kind}": self.later_stage_settings(kind)}
        if sequence.method in MASKED_SEQUENCE_METHODS:
            used["train_calibration"] |= {"first_stage_run": self.dense_run(sequence.replicate(sequence.tasks[0]))}
            used["later_stages"]["train_calibration"] = self.later_stage_settings("calibration")
        return json.dumps(used, sort_keys=True)

    # --- merges ---------------------------------------------------------------------------

    def merge_results(self) -> list[str]:
        """Every configured merge method on every configured task set, at lambda and each sweep lambda."""
        settings = self.config["merge"]
        merges = []
        for seed, tasks, method in itertools.product(self.replicate_seeds(), settings["tasks"], settings["methods"]):
            percent = names.number_name(settings["sparsity"]) if method == "lotasum" else None
            merges.append(Merge(method, tuple(tasks), percent, seed=seed).name)
            merges += [
                Merge(method, tuple(tasks), percent, named_scale=names.number_name(scale), seed=seed).name
                for scale in settings["sweep_scales"]
                if scale != settings["scale"]
            ]
        for name in merges:
            self.merge(name)  # an unknown, untrainable or unscored task fails here, before any job
        return [f"results/merge/{name}.json" for name in merges]

    def merge_runs(self, name: str) -> list[str]:
        return [f"work/runs/{run}/weights.safetensors" for run in self.merge(name).runs]

    def merge_options(self, name: str) -> str:
        merge = self.merge(name)
        settings = {key: self.config["merge"][key] for key in ("density", "granularity")}
        return cli_options(
            {"method": MERGE_METHODS[merge.method], "scale": merge.scale, **settings, "seed": self.seed(name)}
        )

    def merge_base_results(self, name: str) -> list[str]:
        """The base model's results on every task a merge merges, sampled with the merge's seed."""
        merge = self.merge(name)
        return [f"results/base_{task}{names.seed_suffix(merge.seed)}.json" for task in merge.tasks]

    def merge_samples(self, name: str) -> dict[str, str]:
        """TASK -> PATH of the merged model's samples on every task it merges."""
        return {task: f"work/merge/samples/{name}/{task}.jsonl" for task in self.merge(name).tasks}

    def merge_provenance(self, name: str) -> str:
        """The config values a merge's result depends on, as JSON."""
        merge = self.merge(name)
        used = self.method_provenance("lota" if merge.method == "lotasum" else "fft", None, self.seed(name))
        used |= {"tasks": {task: self.task_provenance(task) for task in merge.tasks}, "runs": merge.runs}
        used["merge"] = {key: self.config["merge"][key] for key in ("density", "granularity")} | {"scale": merge.scale}
        return json.dumps(used, sort_keys=True)

    # --- the harnesses: any model the pipeline builds, named as its target is ---------------

    def exported_model(self, name: str) -> str:
        """The HF directory of a model by its name; the base model for base_<task>."""
        if names.is_merge(name):
            self.merge(name)
            return f"work/merge/models/{name}"
        if is_sequence(name):
            self.sequence(name)
            return model_path(name)
        return BASE_MODEL if self.run(name).method == "base" else model_path(name)

    def model_provenance(self, name: str) -> dict[str, Any]:
        """The config values a model depends on."""
        if names.is_merge(name):
            return json.loads(self.merge_provenance(name))
        return json.loads(self.sequence_provenance(name) if is_sequence(name) else self.provenance(name))

    def harness_results(self, section: str) -> list[str]:
        """results/<section>/<model>.json of every model listed under config key <section>.models."""
        for name in self.config[section]["models"]:
            self.exported_model(name)  # a bad name fails here, before any job
        return [f"results/{section}/{name}.json" for name in self.config[section]["models"]]

    def lmeval_dataset_files(self) -> list[str]:
        """The local files the offline lm-eval tasks may read, so that changing them rebuilds the tasks."""
        if self.data_dir is None:
            raise UserError("offline lm-eval tasks need a local data folder (config data_dir or $LOTA_DATA_DIR)")
        files = [
            os.path.join(self.data_dir, dataset.folder, name)
            for dataset in LOCAL_DATASETS.values()
            for name in dataset.files.values()
        ]
        return sorted(file for file in files if os.path.isfile(file))

    def lmeval_inputs(self, name: str) -> dict[str, str]:
        """The model, and the offline task folder when the tasks read a local data folder."""
        inputs = {"model": self.exported_model(name)}
        if self.data_dir is not None:
            inputs["tasks"] = LMEVAL_TASKS
        return inputs

    def lmeval_options(self, name: str) -> str:
        lmeval = self.config["lmeval"]
        settings = {key: lmeval[key] for key in ("tasks", "num_fewshot", "limit", "batch_size", "apply_chat_template")}
        settings = {key: value for key, value in settings.items() if value is not None}
        settings |= {"backend": self.config["generate"]["backend"], "seed": self.seed(name)}
        if self.data_dir is not None:
            settings["task_dir"] = LMEVAL_TASKS
        return cli_options(settings)

    def harness_provenance(self, name: str, section: str, extra: dict[str, Any] | None = None) -> str:
        """The config values a harness result depends on: the model's (which hold the data folder,
        seed and generation settings), the harness's section, and `extra`."""
        settings = {key: value for key, value in self.config[section].items() if key != "models"}
        return json.dumps({"model": self.model_provenance(name), section: settings} | (extra or {}), sort_keys=True)

    def alpaca_samples(self, name: str) -> str:
        """A model's outputs on the AlpacaEval instructions: the run's own samples where its task is
        evaluated on them (alpaca, sharegpt4), else generated on alpaca's evaluation records."""
        if not names.is_merge(name) and not is_sequence(name) and self.run(name).task in ALPACA_EVAL_TASKS:
            return f"work/samples/{name}.jsonl"
        self.check_task("alpaca")
        return f"work/alpaca_eval/samples/{name}.jsonl"

    def alpaca_eval_inputs(self, name: str) -> dict[str, str]:
        """The samples, and the local judge's model (the base model unless another is configured)."""
        inputs = {"samples": self.alpaca_samples(name)}
        settings = self.config["alpaca_eval"]
        if settings["judge"] == "local":
            inputs["judge_model"] = BASE_MODEL if settings["judge_model"] == "base" else settings["judge_model"]
        return inputs

    def alpaca_eval_options(self, name: str) -> str:
        settings = {"judge": self.config["alpaca_eval"]["judge"], "seed": self.seed(name)}
        inputs = self.alpaca_eval_inputs(name)
        if "judge_model" in inputs:
            settings["judge_model"] = inputs["judge_model"]
        if self.data_dir is not None:
            settings["data_dir"] = self.data_dir
        return cli_options(settings)


def training_method(method: str) -> str:
    """What a method trains its stages with: lota for every LoTA sequence method, else itself."""
    return "lota" if method in MASKED_SEQUENCE_METHODS else method


def mask_option(inputs: Mapping[str, str]) -> str:
    """--mask of a training job whose inputs hold one, followed by a space; else nothing."""
    return f"{cli_options({'mask': inputs['mask']})} " if "mask" in inputs else ""
