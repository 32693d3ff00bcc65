"""The plan the workflow's rules call: names checked against the config, the paths, options and
provenance of every job, and the refusals that stop a run before any job; all without Snakemake's
DAG (the real DAG is the workflow tests')."""

from __future__ import annotations

import copy
import json
import shlex

import pytest
import yaml
from snakemake.utils import validate

from lota.core.config import config_errors, load_schema
from lota.core.errors import UserError
from lota.pipeline.plan import Plan, cli_options, key_paths
from tests.conftest import REPO, SHARED_DATA

DATA = str(SHARED_DATA)  # the plan checks that data_dir is a folder

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def make_plan(data_dir: str | None = DATA, **sections) -> Plan:
    """A plan of config.yaml with `sections` replacing its top-level keys, as the workflow builds it."""
    config = yaml.safe_load((REPO / "config.yaml").read_text()) | copy.deepcopy(sections)
    config["tasks"] |= {"arc_easy": {"train_size": 8, "eval_size": 4}, "piqa": {}}
    assert not config_errors(config, load_schema(SCHEMA))
    calibration = config["train"].get("calibration") or {}
    later = (config.get("continual") or {}).get("later_stages") or {}
    validate(config, str(SCHEMA))
    return Plan(config, calibration, later, data_dir)


@pytest.fixture(scope="module")
def plan() -> Plan:
    return make_plan()


def options(command: str) -> dict[str, str]:
    """--flag value pairs of an option string (a flag with several values keeps them space-joined)."""
    parsed, flag = {}, None
    for token in shlex.split(command):
        if token.startswith("--"):
            flag = token
            parsed[flag] = ""
        else:
            parsed[flag] = f"{parsed[flag]} {token}".strip()
    return parsed


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: p.run("base_gsm9k"), "unknown task 'gsm9k': not under config key 'tasks' (configured: gsm8k, "),
        (lambda p: p.run("fft_piqa"), "task 'piqa' is evaluation-only (no training split): only base_piqa can be run"),
        (lambda p: p.run("dpo_gsm8k"), "run name 'dpo_gsm8k' is not base_<task>, fft_<task>, lora_<task>[_r<rank>]"),
        (lambda p: p.scored_samples("base_alpaca"), "task 'alpaca' has no built-in scorer: build work/samples/base_a"),
        (lambda p: p.sequence("fft_gsm8k-boolq"), "unknown task 'boolq'"),
        (
            lambda p: p.sequence("fft_gsm8k-alpaca"),
            "sequence 'fft_gsm8k-alpaca': task 'alpaca' has no built-in scorer, so no forgetting can be measured",
        ),
        (lambda p: p.merge("ties_gsm8k+nope"), "unknown task 'nope'"),
        (lambda p: p.merge("ties_gsm8k+alpaca"), "task 'alpaca' has no built-in scorer, so the merge cannot be scored"),
        (lambda p: p.exported_model("lota_gsm8k"), "run name 'lota_gsm8k' is not"),
        (lambda p: p.local_task_files("boolq"), "unknown task 'boolq': not under config key 'tasks'"),
    ],
)
def test_a_name_the_config_cannot_run_is_refused_in_one_line(plan, call, message):
    with pytest.raises(UserError) as refused:
        call(plan)
    assert message in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("sections", "data_dir", "message"),
    [
        ({"sweep": {"tasks": ["piqa"]}}, DATA, "task 'piqa' is evaluation-only"),
        ({"sweep": {"tasks": ["boolq"]}}, DATA, "unknown task 'boolq'"),
        ({"continual": {"sequences": [["gsm8k", "alpaca"]]}}, DATA, "so no forgetting can be measured"),
        ({"merge": {"tasks": [["gsm8k", "piqa"]]}}, DATA, "task 'piqa' is evaluation-only"),
        ({"lmeval": {"models": ["lota_gsm8k"]}}, DATA, "run name 'lota_gsm8k' is not"),
        ({"alpaca_eval": {"models": ["ties_gsm8k+nope"]}}, DATA, "unknown task 'nope'"),
        ({}, "/data/{x}", "config key data_dir (or $LOTA_DATA_DIR): braces are not allowed in '/data/{x}'"),
        ({"tasks": {"mawps2": {}}}, DATA, "config key tasks: unknown task 'mawps2'; known tasks: "),
    ],
)
def test_a_config_whose_targets_cannot_run_stops_before_any_job(sections, data_dir, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        plan = make_plan(data_dir, **sections)
        plan.sweep_results(), plan.continual_results(), plan.merge_results()
        plan.harness_results("lmeval"), plan.harness_results("alpaca_eval")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("seed", -1, "config key seed: -1 is less than the minimum of 0"),
        ("mask", {"granularity": "local"}, "config key mask.granularity: 'local' is not one of"),
        ("lmeval", {"limit": -1}, "config key lmeval.limit"),
        ("sweep", {"sparsities": [90, 100]}, "config key sweep.sparsities.1: 100 is greater than or equal to the max"),
    ],
)
def test_the_schema_names_the_bad_config_key(key, value, message):
    config = yaml.safe_load((REPO / "config.yaml").read_text()) | {key: value}
    assert message in config_errors(config, load_schema(SCHEMA))[0]


def test_the_sweep_names_every_method_sparsity_and_strategy():
    plan = make_plan(
        sweep={
            "tasks": ["arc_easy"],
            "sparsities": [90, 99.9],
            "methods": ["base", "fft", "lora", "lota", "rosa"],
            "mask_strategies": ["task_vector", "random"],
        }
    )
    assert plan.sweep_results() == [
        f"results/{run}.json"
        for run in (
            "base_arc_easy",
            "fft_arc_easy",
            "lora_arc_easy",
            "lota_arc_easy_s90",
            "lota_arc_easy_s90_random",
            "lota_arc_easy_s99.9",
            "lota_arc_easy_s99.9_random",
            "rosa_arc_easy_s90",
            "rosa_arc_easy_s99.9",
        )
    ]


def test_sequences_and_merges_name_every_method_and_lambda():
    plan = make_plan(
        continual={"sequences": [["gsm8k", "mawps"]], "methods": ["fft", "lotto"], "sparsity": 99.0},
        merge={"tasks": [["gsm8k", "mawps"]], "methods": ["ties", "lotasum"], "sweep_scales": [0.5, 1.0]},
    )
    assert plan.continual_results() == ["results/cl/fft_gsm8k-mawps.json", "results/cl/lotto_gsm8k-mawps_s99.json"]
    assert plan.merge_results() == [
        "results/merge/ties_gsm8k+mawps.json",
        "results/merge/ties_gsm8k+mawps_l0.5.json",
        "results/merge/lotasum_gsm8k+mawps_s90.json",
        "results/merge/lotasum_gsm8k+mawps_s90_l0.5.json",
    ]
    assert options(plan.merge_options("ties_gsm8k+mawps_l0.5"))["--scale"] == "0.5"
    assert options(plan.merge_options("lotasum_gsm8k+mawps_s90"))["--method"] == "sparse_sum"
    assert plan.merge_runs("lotasum_gsm8k+mawps_s90") == [
        "work/runs/lota_gsm8k_s90/weights.safetensors",
        "work/runs/lota_mawps_s90/weights.safetensors",
    ]


def test_the_dense_run_is_the_fft_baseline_unless_calibration_has_a_budget_of_its_own(plan):
    assert plan.dense_run("gsm8k") == "fft_gsm8k"
    shorter = make_plan(
        train=yaml.safe_load((REPO / "config.yaml").read_text())["train"] | {"calibration": {"epochs": 0.5}}
    )
    assert shorter.dense_run("gsm8k") == "calibration_gsm8k"
    assert options(shorter.train_options("calibration", "gsm8k"))["--epochs"] == "0.5"
    assert options(shorter.train_options("fft", "gsm8k"))["--epochs"] == "1"
    provenance = json.loads(shorter.provenance("lota_gsm8k_s90"))
    assert provenance["train_calibration"]["run"] == "calibration_gsm8k" and "train_fft" not in provenance


def test_a_runs_options_carry_its_method_mask_task_length_and_adapters(plan):
    lota = options(plan.run_train_options("lota_gsm8k_s90_random"))
    assert lota["--mask"] == "work/masks/gsm8k_s90_random.safetensors" and lota["--lr"] == "0.0001"
    assert lota["--max-length"] == "384" and lota["--seed"] == "0" and "--lora-rank" not in lota
    lora = options(plan.run_train_options("lora_gsm8k_r8"))
    assert lora["--lora-rank"] == "8" and lora["--lora-targets"] == "auto" and "--mask" not in lora
    rosa = options(plan.rosa_options("rosa_gsm8k_s90"))
    assert rosa["--mask"] == "work/masks/gsm8k_s90_fisher.safetensors" and rosa["--lora-rank"] == "16"
    assert options(plan.run_shape_options("rosa_gsm8k_s90")) == {
        "--sparsity": "0.9",
        "--lora-rank": "16",
        "--mask-strategy": "fisher",
    }


def test_rosa_builds_its_mask_after_a_warm_up_only_from_gradients():
    plan = make_plan(rosa={"mask_warmup_steps": 3})
    warmup = options(plan.rosa_options("rosa_gsm8k_s90_gradient_mean"))
    assert warmup["--mask-warmup-steps"] == "3" and warmup["--mask-kind"] == "mean" and "--mask" not in warmup
    assert "mask" not in plan.run_training_inputs("rosa_gsm8k_s90")
    with pytest.raises(UserError, match="ranks gradients: use strategy fisher or gradient_mean, not random"):
        plan.rosa_options("rosa_gsm8k_s90_random")


def test_each_mask_strategy_reads_what_ranks_its_entries(plan):
    assert plan.mask_rule_inputs("gsm8k", "gradient_mean") == {"scores": "work/fisher/gsm8k_mean.safetensors"}
    assert plan.mask_rule_inputs("gsm8k", "random") == {"base": "work/base_model"}
    fisher = options(plan.mask_rule_options("gsm8k", "fisher"))
    assert fisher["--strategy"] == "fisher" and fisher["--scores"] == "work/fisher/gsm8k_mean_squared.safetensors"
    assert fisher["--granularity"] == "global"
    benchmarks = plan.stage_benchmarks("lota_gsm8k_s90_fisher")
    assert "fisher=benchmarks/fisher/gsm8k_mean_squared.tsv" in benchmarks
    assert "extract_mask=benchmarks/extract_mask/gsm8k_s90_fisher.tsv" in benchmarks and "calibrate=" not in benchmarks


def test_later_stages_train_with_their_own_settings_and_lotto_excludes_every_earlier_mask():
    plan = make_plan(continual={"later_stages": {"lota": {"lr": 1e-7}, "calibration": {"epochs": 0.5}}})
    stage_two = options(plan.sequence_stage_options("lotto_gsm8k-mawps_s90"))
    assert stage_two["--lr"] == "1e-07" and stage_two["--mask"] == "work/cl/masks/lotto_gsm8k-mawps_s90.safetensors"
    assert options(plan.run_train_options("lota_gsm8k_s90"))["--lr"] == "0.0001"
    assert options(plan.calibration_options("dense", "lota_gsm8k_s90", "mawps"))["--epochs"] == "0.5"
    flip = options(plan.calibration_options("flip", "lota_gsm8k_s90", "mawps"))
    assert flip["--mask"] == "work/cl/complement_masks/lota_gsm8k_s90.safetensors"
    assert plan.sequence_mask_inputs("lotto_gsm8k-mawps-arc_easy_s90")["exclude"] == [
        "work/masks/gsm8k_s90.safetensors",
        "work/cl/masks/lotto_gsm8k-mawps_s90.safetensors",
    ]
    assert plan.sequence_mask_inputs("lota_gsm8k-mawps_s90")["exclude"] == []
    provenance = json.loads(plan.sequence_provenance("lotto_gsm8k-mawps_s90"))
    assert provenance["later_stages"]["train_lota"]["lr"] == 1e-7 and provenance["train_lota"]["lr"] == 1e-4


def test_a_sequence_scores_every_stage_on_every_task(plan):
    assert plan.sequence_samples("lotto_gsm8k-mawps_s90") == {
        "0:gsm8k": "work/samples/base_gsm8k.jsonl",
        "0:mawps": "work/samples/base_mawps.jsonl",
        "1:gsm8k": "work/samples/lota_gsm8k_s90.jsonl",
        "1:mawps": "work/cl/samples/lota_gsm8k_s90/mawps.jsonl",
        "2:gsm8k": "work/cl/samples/lotto_gsm8k-mawps_s90/gsm8k.jsonl",
        "2:mawps": "work/cl/samples/lotto_gsm8k-mawps_s90/mawps.jsonl",
    }
    assert plan.sequence_benchmarks("lotto_gsm8k-mawps_s90") == key_paths(
        {
            "1:calibrate": "benchmarks/train/fft_gsm8k.tsv",
            "1:train": "benchmarks/train/lota_gsm8k_s90.tsv",
            "2:calibrate": "benchmarks/cl/calibration/dense/lota_gsm8k_s90/mawps.tsv",
            "2:train": "benchmarks/cl/train/lotto_gsm8k-mawps_s90.tsv",
        }
    )


def test_the_harnesses_find_any_model_by_its_name(plan):
    assert plan.exported_model("base_gsm8k") == "work/base_model"
    assert plan.exported_model("lotto_gsm8k-mawps_s90") == "work/cl/models/lotto_gsm8k-mawps_s90"
    assert plan.exported_model("ties_gsm8k+mawps") == "work/merge/models/ties_gsm8k+mawps"
    assert plan.alpaca_samples("lora_alpaca") == "work/samples/lora_alpaca.jsonl"
    assert plan.alpaca_samples("fft_gsm8k") == "work/alpaca_eval/samples/fft_gsm8k.jsonl"
    assert options(plan.lmeval_options("fft_gsm8k"))["--task-dir"] == "work/lmeval/tasks"
    assert "--task-dir" not in options(make_plan(None).lmeval_options("fft_gsm8k"))


@pytest.mark.parametrize(
    ("train", "processes"), [({}, 1), ({"gpu": 4}, 4), ({"gpu": 0, "processes": 2}, 2), ({"gpu": 4, "processes": 2}, 2)]
)
def test_a_training_job_asks_for_a_process_per_gpu_unless_configured(train, processes):
    resources = yaml.safe_load((REPO / "config.yaml").read_text())["resources"]
    plan = make_plan(resources=resources | {"train": resources["train"] | train | {"threads": 3}})
    assert plan.resources("train")["processes"] == processes and "threads" not in plan.resources("train")
    assert plan.threads_option("train") == "--threads 3"


def test_only_training_jobs_take_processes_and_checkpoints():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["resources"]["generate"]["processes"] = 2
    assert "config key resources.generate" in config_errors(config, load_schema(SCHEMA))[0]


def test_options_are_shell_quoted():
    assert cli_options({"data_dir": "a b;c", "flag": False, "items": ["x", "y z"]}) == (
        "--data-dir 'a b;c' --no-flag --items x 'y z'"
    )


def test_a_replicate_trains_samples_and_masks_with_its_own_seed(plan):
    assert plan.train_data("lota_gsm8k_s90_seed2") == "work/data/gsm8k/train_seed2.jsonl"
    assert plan.train_data("lota_gsm8k_s90") == "work/data/gsm8k/train.jsonl"
    assert plan.run_mask("lota_gsm8k_s90_random_seed2") == "work/masks/gsm8k_seed2_s90_random.safetensors"
    assert plan.dense_run("gsm8k_seed2") == "fft_gsm8k_seed2"
    assert options(plan.train_options("fft", "gsm8k_seed2"))["--seed"] == "2"
    assert options(plan.generate_options("lotto_gsm8k-mawps_s90_seed3"))["--seed"] == "3"
    assert options(plan.generate_options("base_gsm8k"))["--seed"] == "0"
    assert options(plan.mask_rule_options("gsm8k_seed2", "random"))["--seed"] == "2"
    assert plan.mask_rule_inputs("gsm8k_seed2", "fisher") == {
        "scores": "work/fisher/gsm8k_seed2_mean_squared.safetensors"
    }
    assert options(plan.prepare_data_options("gsm8k_seed2"))["--train-seed"] == "2"
    assert options(plan.prepare_data_options("gsm8k_seed2"))["--seed"] == "0"  # the same evaluation records
    assert json.loads(plan.provenance("lota_gsm8k_s90_seed2"))["train_calibration"]["run"] == "fft_gsm8k_seed2"
    assert json.loads(plan.provenance("lota_gsm8k_s90_seed2"))["seed"] == 2
    sequence = plan.sequence_samples("lotto_gsm8k-mawps_s90_seed1")
    assert sequence["0:mawps"] == "work/samples/base_mawps_seed1.jsonl"
    assert sequence["1:gsm8k"] == "work/samples/lota_gsm8k_s90_seed1.jsonl"
    assert plan.sequence_stage_inputs("lotto_gsm8k-mawps_s90_seed1")["data"] == "work/data/mawps/train_seed1.jsonl"
    assert (
        plan.calibration_inputs("dense", "lota_gsm8k_s90_seed1", "mawps")["data"] == "work/data/mawps/train_seed1.jsonl"
    )
    assert plan.merge_base_results("ties_gsm8k+mawps_seed1") == [
        "results/base_gsm8k_seed1.json",
        "results/base_mawps_seed1.json",
    ]
    assert options(plan.merge_options("dareties_gsm8k+mawps_seed4"))["--seed"] == "4"
    stages = shlex.split(plan.stage_benchmarks("lota_gsm8k_s90_seed2"))
    assert "replicate_data=benchmarks/prepare_data/gsm8k_seed2.tsv" in stages
    assert "calibrate=benchmarks/train/fft_gsm8k_seed2.tsv" in stages


def test_the_base_seed_has_one_name():
    with pytest.raises(
        UserError, match="'lota_gsm8k_s90_seed0': seed 0 is the config's base seed .*name it lota_gsm8k_s90"
    ):
        make_plan().run("lota_gsm8k_s90_seed0")
    assert make_plan(seed=5).run("lota_gsm8k_s90_seed0").seed == 0


def test_the_targets_build_every_configured_seed():
    plan = make_plan(
        seeds=[0, 2],
        sweep={"tasks": ["gsm8k"], "sparsities": [90], "methods": ["fft", "lota"]},
        continual={"sequences": [["gsm8k", "mawps"]], "methods": ["fft"]},
        merge={"tasks": [["gsm8k", "mawps"]], "methods": ["ties"]},
    )
    assert plan.sweep_results() == [
        "results/fft_gsm8k.json",
        "results/lota_gsm8k_s90.json",
        "results/fft_gsm8k_seed2.json",
        "results/lota_gsm8k_s90_seed2.json",
    ]
    assert plan.continual_results() == ["results/cl/fft_gsm8k-mawps.json", "results/cl/fft_gsm8k-mawps_seed2.json"]
    assert plan.merge_results() == ["results/merge/ties_gsm8k+mawps.json", "results/merge/ties_gsm8k+mawps_seed2.json"]
    assert make_plan(seed=3, seeds=[1]).replicate_seeds() == [1]
    assert make_plan().replicate_seeds() == [None]


def plan_with_rates(kind: str, rates: list[float], valid_size: int = 4, calibration: dict | None = None) -> Plan:
    """A plan of config.yaml whose train.<kind>.lr lists `rates`, with gsm8k validation records."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["train"][kind]["lr"] = rates
    config["tasks"]["gsm8k"]["valid_size"] = valid_size
    validate(config, str(SCHEMA))
    return Plan(config, calibration or {}, {}, DATA)


def test_listed_rates_are_tried_on_validation_and_every_seed_trains_at_the_choice():
    plan = plan_with_rates("lota", [1.0e-4, 3.0e-4])
    assert plan.lr_candidates("lota_gsm8k_s90") == {
        "0.0001": "work/lr_search/results/lota_gsm8k_s90/lr0.0001.json",
        "0.0003": "work/lr_search/results/lota_gsm8k_s90/lr0.0003.json",
    }
    assert (
        plan.lr_choice("lota_gsm8k_s90_seed1") == plan.lr_choice("lota_gsm8k_s90") == "results/lr/lota_gsm8k_s90.json"
    )
    assert plan.lr_choice("fft_gsm8k") is None and plan.lr_choices("base_gsm8k") == []
    chosen = options(plan.run_train_options("lota_gsm8k_s90_seed1"))
    assert chosen["--lr-from"] == "results/lr/lota_gsm8k_s90.json" and "--lr" not in chosen
    candidate = options(plan.candidate_options("lota_gsm8k_s90", "0.0003"))
    assert candidate["--lr"] == "0.0003" and "--lr-from" not in candidate
    assert candidate["--mask"] == "work/masks/gsm8k_s90.safetensors"
    assert "lr_choice" not in plan.candidate_inputs("lota_gsm8k_s90")
    assert plan.candidate_weights("lota_gsm8k_s90", "0.0003") == [
        "work/lr_search/runs/lota_gsm8k_s90/lr0.0003/weights.safetensors"
    ]
    assert plan.valid_data("lota_gsm8k_s90") == "work/data/gsm8k/valid.jsonl"
    assert json.loads(plan.candidate_provenance("lota_gsm8k_s90", "0.0003"))["lr"] == 3e-4
    jobs = shlex.split(plan.stage_benchmarks("lota_gsm8k_s90_seed1"))  # the whole cost holds the search
    assert "lr_search:lota_gsm8k_s90:lr0.0003:train_lota=benchmarks/lr_search/train/lota_gsm8k_s90/lr0.0003.tsv" in jobs
    assert "select_lr:lota_gsm8k_s90=benchmarks/select_lr/lota_gsm8k_s90.tsv" in jobs
    with pytest.raises(UserError, match="the base seed's runs choose the learning rate: name it lota_gsm8k_s90"):
        plan.lr_candidates("lota_gsm8k_s90_seed1")
    with pytest.raises(UserError, match="train.fft.lr is one rate, so there is none to choose"):
        plan.lr_candidates("fft_gsm8k")
    with pytest.raises(UserError, match="config key tasks.mawps.valid_size: train.lota.lr lists rates"):
        plan.lr_candidates("lota_mawps_s90")


def test_a_later_stage_trains_at_the_rate_its_method_chose_on_its_own_task():
    plan = plan_with_rates("lota", [1.0e-4, 3.0e-4])
    stage = plan.sequence_stage_inputs("lotto_gsm8k-mawps_s90_seed1")
    assert stage["lr_choice"] == "results/lr/lota_mawps_s90.json"  # the base seed's choice, on mawps
    chosen = options(plan.sequence_stage_options("lotto_gsm8k-mawps_s90_seed1"))
    assert chosen["--lr-from"] == "results/lr/lota_mawps_s90.json" and "--lr" not in chosen
    assert chosen["--mask"] == "work/cl/masks/lotto_gsm8k-mawps_s90_seed1.safetensors"
    calibration = plan.calibration_inputs("dense", "lota_gsm8k_s90_seed1", "mawps")
    assert "lr_choice" not in calibration  # fft has one rate
    assert options(plan.calibration_options("dense", "lota_gsm8k_s90_seed1", "mawps"))["--lr"] == "1e-05"
    dense = plan_with_rates("fft", [1.0e-5, 3.0e-5])
    calibration = dense.calibration_inputs("flip", "lota_gsm8k_s90", "mawps")
    assert calibration["lr_choice"] == "results/lr/fft_mawps.json"
    assert (
        options(dense.calibration_options("flip", "lota_gsm8k_s90", "mawps"))["--lr-from"] == calibration["lr_choice"]
    )
    assert dense.sequence_stage_inputs("fft_gsm8k-mawps")["lr_choice"] == "results/lr/fft_mawps.json"
    assert "lr_choice" not in dense.sequence_stage_inputs("lota_gsm8k-mawps_s90")


def test_the_report_compares_the_masks_of_the_sweep_the_merges_and_the_later_stages_across_seeds():
    plan = make_plan(
        seeds=[0, 1],
        sweep={"tasks": ["gsm8k"], "sparsities": [90], "methods": ["fft", "lota"]},
        continual={"sequences": [["gsm8k", "arc_easy"]], "methods": ["fft", "lotto"]},
        merge={"tasks": [["gsm8k", "arc_easy"]], "methods": ["ties", "lotasum"]},
    )
    assert plan.report_masks() == [
        "work/masks/arc_easy_s90.safetensors",
        "work/masks/arc_easy_seed1_s90.safetensors",
        "work/masks/gsm8k_s90.safetensors",
        "work/masks/gsm8k_seed1_s90.safetensors",
    ]
    assert plan.report_sequence_masks() == [
        "work/cl/masks/lotto_gsm8k-arc_easy_s90.safetensors",
        "work/cl/masks/lotto_gsm8k-arc_easy_s90_seed1.safetensors",
    ]


def test_a_later_stage_given_a_rate_trains_at_it_and_a_list_of_other_rates_is_refused():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["train"]["lota"]["lr"] = [1.0e-4, 3.0e-4]
    validate(config, str(SCHEMA))
    plan = Plan(config, {}, {"lota": {"lr": 1.0e-6}}, DATA)
    assert "lr_choice" not in plan.sequence_stage_inputs("lota_gsm8k-mawps_s90")
    assert options(plan.sequence_stage_options("lota_gsm8k-mawps_s90"))["--lr"] == "1e-06"
    plan = Plan(config, {}, {"lota": {"lr": [1.0e-6, 1.0e-5]}}, DATA)
    with pytest.raises(UserError, match=r"continual.later_stages.lota.lr: a later stage trains at one rate, or at "):
        plan.sequence_stage_options("lota_gsm8k-mawps_s90")


def test_the_dense_run_trains_at_the_fft_choice_unless_calibration_has_a_rate_of_its_own():
    plan = plan_with_rates("fft", [1.0e-5, 3.0e-5])
    assert plan.dense_training_inputs("fft", "gsm8k_seed1")["lr_choice"] == "results/lr/fft_gsm8k.json"
    assert options(plan.dense_train_options("fft", "gsm8k"))["--lr-from"] == "results/lr/fft_gsm8k.json"
    own = plan_with_rates("fft", [1.0e-5, 3.0e-5], calibration={"epochs": 0.5, "lr": 2.0e-5})
    assert "lr_choice" not in own.dense_training_inputs("calibration", "gsm8k")
    assert options(own.dense_train_options("calibration", "gsm8k"))["--lr"] == "2e-05"
    with pytest.raises(UserError, match="config key tasks.gsm8k.valid_size: train.fft.lr lists rates"):
        plan_with_rates("fft", [1.0e-5, 3.0e-5], valid_size=0).sweep_results()


def test_the_report_reads_every_seeds_masks_and_the_configured_pairs():
    plan = make_plan(seeds=[0, 1], sweep={"tasks": ["gsm8k"], "sparsities": [90], "methods": ["fft", "lota", "rosa"]})
    assert plan.report_masks() == [
        "work/masks/gsm8k_s90.safetensors",
        "work/masks/gsm8k_s90_fisher.safetensors",
        "work/masks/gsm8k_seed1_s90.safetensors",
        "work/masks/gsm8k_seed1_s90_fisher.safetensors",
    ]
    paired = make_plan(
        report={"pairs": [["lota_gsm8k_s95", "lora_gsm8k"], ["lotto_gsm8k-mawps_s90", "fft_gsm8k-mawps"]]}
    )
    assert paired.report_pairs() == ["lota_gsm8k_s95:lora_gsm8k", "lotto_gsm8k-mawps_s90:fft_gsm8k-mawps"]
    for pair, message in (
        (["lota_gsm8k_s95_seed1", "lora_gsm8k"], "name 'lota_gsm8k_s95_seed1' without _seed<N>"),
        (["lota_gsm8k_s95", "lora_mawps"], "lota_gsm8k_s95 and lora_mawps are not scored on the same tasks"),
        (["lota_gsm8k_s95", "dpo_gsm8k"], "run name 'dpo_gsm8k' is not"),
    ):
        with pytest.raises(UserError, match=message):
            make_plan(report={"pairs": [pair]}).report_pairs()
