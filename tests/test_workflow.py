"""The real DAG through the snakemake CLI, on a tiny random Llama and a few GSM8K records."""

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO, plan_preset, planned_jobs, refused_plan, snakemake, tiny_workdir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model, gsm8k_dir):
    root = tmp_path_factory.mktemp("workflow")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["base_model"]["source"] = str(tiny_model)
    config["data_dir"] = str(gsm8k_dir)
    config["tasks"]["gsm8k"] = {"train_size": 8, "eval_size": 4, "max_length": 256, "max_new_tokens": 8}
    for method in ("fft", "lota", "lora", "calibration"):
        config["train"][method]["batch_size"] = 4
    config["generate"]["batch_size"] = 4
    config["sweep"] = {"tasks": ["gsm8k"], "sparsities": [90]}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


@pytest.mark.slow  # about 4 min: every method's jobs, for real
def test_sweep_runs_every_method_into_a_report_and_reuses_the_dense_run(workdir):
    done = snakemake(workdir, "--cores", "2", "sweep")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((workdir / "results" / "lota_gsm8k_s90.json").read_text())
    assert result["method"] == "lota" and result["sparsity"] == 0.9 and result["n"] == 4
    assert 0.0 <= result["accuracy"] <= 1.0 and result["ci95"][0] <= result["accuracy"] <= result["ci95"][1]
    assert result["trainable_params"] > 0
    assert {
        "base_model",
        "prepare_data",
        "calibrate",
        "task_vector",
        "extract_mask",
        "train_lota",
        "export",
        "generate",
    } <= set(result["stages"])
    assert result["config"]["train_lota"]["lr"] == 1e-4
    base = json.loads((workdir / "results" / "base_gsm8k.json").read_text())
    assert base["method"] == "base" and base["trainable_params"] == 0
    lora = json.loads((workdir / "results" / "lora_gsm8k.json").read_text())
    assert lora["method"] == "lora" and lora["lora_rank"] == 16 and 0 < lora["trainable_params"]
    assert {"train_lora", "export", "generate"} <= set(lora["stages"]) and "train_fft" not in lora["stages"]
    assert lora["config"]["lora"]["rank"] == 16 and lora["train"]["optimizer_state_bytes"] > 0
    report = (workdir / "results" / "report.md").read_text()
    for run in ("base_gsm8k", "fft_gsm8k", "lora_gsm8k", "lota_gsm8k_s90"):
        assert f"| {run} |" in report
    assert (workdir / "results" / "plots" / "gsm8k.png").read_bytes().startswith(b"\x89PNG")
    html = snakemake(workdir, "--report", "report.html", "sweep")
    assert html.returncode == 0, html.stderr[-3000:]
    assert "gsm8k.png" in (workdir / "report.html").read_text()

    plan = snakemake(workdir, "-n", "results/lota_gsm8k_s50.json")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert planned_jobs(plan.stdout + plan.stderr) == {
        "extract_mask": 1,
        "train_lota": 1,
        "export": 1,
        "generate": 1,
        "evaluate": 1,
    }
    plan = snakemake(workdir, "-n", "results/lora_gsm8k_r4.json")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert planned_jobs(plan.stdout + plan.stderr) == {"train_lora": 1, "export": 1, "generate": 1, "evaluate": 1}

    wider = snakemake(workdir, "-n", "sweep", overrides={"sweep": {"sparsities": [50, 90.0, 99]}})
    assert wider.returncode == 0, wider.stderr[-3000:]
    extra_sparsities = {"extract_mask": 2, "train_lota": 2, "export": 2, "generate": 2, "evaluate": 2}
    assert planned_jobs(wider.stdout + wider.stderr) == extra_sparsities | {"report": 1, "sweep": 1}

    # A changed training parameter reruns that training and what follows it; data prep, the base
    # model, the dense run and the mask stay.
    faster = {"train": {"lota": {"lr": 3.0e-4}}}
    plan = snakemake(workdir, "-n", "sweep", overrides=faster)
    assert plan.returncode == 0, plan.stderr[-3000:]
    after_training = {"train_lota": 1, "export": 1, "generate": 1, "evaluate": 1}
    assert planned_jobs(plan.stdout + plan.stderr) == after_training | {"report": 1, "sweep": 1}
    forced = snakemake(workdir, "-n", "results/lota_gsm8k_s90.json", "-R", "train_lota")  # the README's form
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert planned_jobs(forced.stdout + forced.stderr) == after_training
    # A narrower scope reruns the mask and what follows it, not the scope check or the dense run.
    narrower = snakemake(workdir, "-n", "results/lota_gsm8k_s90.json", overrides={"mask": {"scope": ["q_proj"]}})
    assert narrower.returncode == 0, narrower.stderr[-3000:]
    assert planned_jobs(narrower.stdout + narrower.stderr) == {"extract_mask": 1} | after_training
    changes = snakemake(workdir, "--list-changes", "params", overrides=faster)
    assert changes.returncode == 0, changes.stderr[-3000:]
    assert "work/runs/lota_gsm8k_s90" in changes.stdout and "work/data/gsm8k/train.jsonl" not in changes.stdout


def test_workflow_lints_clean():
    lint = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr


def test_the_mawps_preset_plans_the_whole_sweep(tmp_path):
    output = plan_preset(tmp_path, "sweep", "mawps-cpu.yaml")
    jobs = planned_jobs(output)
    assert jobs["train_dense"] == 1 and jobs["train_lota"] == 4 and jobs["evaluate"] == 7 and jobs["report"] == 1
    assert "results/plots/mawps.png" in output


def test_the_claims_preset_chooses_every_rate_on_validation_and_replicates_every_comparison(tmp_path):
    output = plan_preset(tmp_path, "sweep continual merge", "mawps-cpu.yaml", "claims-cpu.yaml")
    jobs = planned_jobs(output)
    # Rates: fft, lora (3 each), lota s90, s99 (5 each) on mawps; fft, lota s90 on arc_easy.
    assert jobs["select_lr"] == 6 and jobs["train_candidate"] == 3 + 3 + 5 + 5 + 3 + 5
    assert jobs["evaluate"] == 24 and jobs["evaluate_sequence"] == 9 and jobs["evaluate_merge"] == 9
    assert jobs["train_stage"] == 9 and jobs["calibrate_stage"] == 3  # lota and lotto share a calibration run
    commands = {line.split("--out ")[1].split()[0]: line for line in output.splitlines() if "lota.train" in line}
    # The ARC-Easy stage trains at the rate its method chose on ARC-Easy, and the calibration before a
    # LoTA method's mask at FFT's.
    assert "--lr-from results/lr/lota_arc_easy_s90.json" in commands["work/cl/runs/lotto_mawps-arc_easy_s90_seed1"]
    assert "--lr-from results/lr/fft_arc_easy.json" in commands["work/cl/runs/fft_mawps-arc_easy_seed2"]
    assert "--lr-from results/lr/fft_arc_easy.json" in commands["work/cl/calibration/dense/lota_mawps_s90/arc_easy"]


@pytest.mark.slow  # about 2 min
def test_mask_strategies_and_rosa_run_and_the_report_compares_them(workdir):
    strategies = ["task_vector", "random", "fisher"]
    sweep = {"tasks": ["gsm8k"], "sparsities": [90], "methods": ["lota", "rosa"], "mask_strategies": strategies}
    done = snakemake(workdir, "--cores", "2", "sweep", overrides={"sweep": sweep})
    assert done.returncode == 0, done.stderr[-3000:]
    results = workdir / "results"
    for run, strategy in (("lota_gsm8k_s90_random", "random"), ("lota_gsm8k_s90_fisher", "fisher")):
        result = json.loads((results / f"{run}.json").read_text())
        assert result["method"] == "lota" and result["mask_strategy"] == strategy and result["sparsity"] == 0.9
        assert result["config"]["mask"]["strategy"] == strategy and "train_calibration" not in result["config"]
        assert "calibrate" not in result["stages"] and "extract_mask" in result["stages"]
    assert "fisher" in json.loads((results / "lota_gsm8k_s90_fisher.json").read_text())["stages"]
    rosa = json.loads((results / "rosa_gsm8k_s90.json").read_text())
    assert rosa["method"] == "rosa" and rosa["mask_strategy"] == "fisher" and rosa["lora_rank"] == 16
    assert {"fisher", "extract_mask", "train_rosa", "export"} <= set(rosa["stages"])
    assert (workdir / "work" / "runs" / "rosa_gsm8k_s90" / "adapter.safetensors").is_file()
    lota = json.loads((results / "lota_gsm8k_s90.json").read_text())
    assert rosa["trainable_params"] > lota["trainable_params"]  # the same mask size, and the adapters
    report = (results / "report.md").read_text()
    assert "#### Mask strategies" in report
    assert "| sparsity | LoTA task_vector | LoTA fisher | LoTA random | RoSA |" in report

    # RoSA's warm-up builds its own mask: no gradient scores or mask job before it.
    plan = snakemake(workdir, "-n", "-p", "results/rosa_gsm8k_s95.json", overrides={"rosa": {"mask_warmup_steps": 1}})
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert planned_jobs(plan.stdout + plan.stderr) == {"train_rosa": 1, "export": 1, "generate": 1, "evaluate": 1}
    assert "--mask-warmup-steps 1 --mask-sparsity 0.95 --mask-kind mean_squared" in plan.stdout
    assert "drop _task_vector" in refused_plan(workdir, "results/lota_gsm8k_s90_task_vector.json")
    assert "use strategy fisher or gradient_mean" in refused_plan(
        workdir, "results/rosa_gsm8k_s95_random.json", overrides={"rosa": {"mask_warmup_steps": 1}}
    )


def test_seeds_expand_every_target_into_replicates_with_their_own_data_and_masks(tmp_path, tiny_model, gsm8k_dir):
    sections = {
        "seeds": [0, 1],
        "sweep": {"tasks": ["gsm8k"], "sparsities": [90], "methods": ["base", "fft", "lota"]},
        "continual": {"sequences": [["gsm8k", "mawps"]], "methods": ["lotto"]},
        "merge": {"tasks": [["gsm8k", "mawps"]], "methods": ["ties"]},
    }
    workdir = tiny_workdir(tmp_path, tiny_model, gsm8k_dir, **sections)
    plan = snakemake(workdir, "-n", "-p", "sweep", "continual", "merge")
    assert plan.returncode == 0, plan.stderr[-3000:]
    output = plan.stdout + plan.stderr
    for name in ("lota_gsm8k_s90", "lota_gsm8k_s90_seed1", "base_gsm8k_seed1", "merge/ties_gsm8k+mawps_seed1"):
        assert f"results/{name}.json" in output
    assert "results/cl/lotto_gsm8k-mawps_s90_seed1.json" in output
    # Each replicate draws its own training subset, dense run, task vector and mask; one
    # evaluation set serves both.
    jobs = planned_jobs(output)
    assert jobs["prepare_data"] == 2 and jobs["prepare_replicate_data"] == 2  # gsm8k and mawps
    assert jobs["train_dense"] == 4 and jobs["extract_mask"] == 2 and jobs["stage_mask"] == 2
    for path in ("work/data/gsm8k/train_seed1.jsonl", "work/masks/gsm8k_seed1_s90.safetensors"):
        assert path in output
    assert "--train-seed 1" in output and "work/data/gsm8k_seed1" not in output
    trainings = [line for line in output.splitlines() if "lota.train" in line and "work/runs/fft_gsm8k_seed1" in line]
    assert trainings and all("--seed 1" in line for line in trainings)
