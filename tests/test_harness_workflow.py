"""lm-eval and AlpacaEval through the real DAG, on a tiny random Llama and a few local records."""

import json
import shutil

import pytest
import yaml

from tests.conftest import SHARED_DATA, plan_preset, planned_jobs, snakemake, tiny_workdir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model, gsm8k_dir):
    root = tmp_path_factory.mktemp("harness")
    lmeval = {"models": ["base_gsm8k", "fft_gsm8k"], "tasks": ["arc_easy"], "limit": 2, "batch_size": 2}
    alpaca_eval = {"models": ["base_alpaca", "fft_gsm8k"], "judge": "local"}
    tiny_workdir(root, tiny_model, gsm8k_dir, lmeval=lmeval, alpaca_eval=alpaca_eval)
    shutil.copytree(SHARED_DATA / "alpaca_eval", root / "data" / "alpaca_eval")
    (root / "data" / "alpaca").mkdir()
    alpaca = json.loads((SHARED_DATA / "alpaca" / "alpaca_5000.json").read_text())[:8]
    (root / "data" / "alpaca" / "alpaca_5000.json").write_text(json.dumps(alpaca))
    config = yaml.safe_load((root / "config.yaml").read_text())
    config["tasks"]["alpaca"] = {"train_size": 4, "eval_size": 3, "max_new_tokens": 8}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def test_lmeval_and_alpaca_eval_results_come_from_the_dag(workdir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the length-controlled win rate's download fails at once
    done = snakemake(workdir, "--cores", "2", "lmeval", "alpaca_eval", "results/report.md")
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("base_gsm8k", "fft_gsm8k"):
        result = json.loads((workdir / "results" / "lmeval" / f"{name}.json").read_text())
        assert result["model"] == name and result["backend"] == "hf" and result["data"] == "local"
        assert result["tasks"]["arc_easy"]["n"] == 2 and result["tasks"]["arc_easy"]["num_fewshot"] == 0
        assert result["config"]["lmeval"]["limit"] == 2
    fft = json.loads((workdir / "results" / "lmeval" / "fft_gsm8k.json").read_text())
    assert fft["model_dir"] == "work/models/fft_gsm8k" and fft["config"]["model"]["train_fft"]["batch_size"] == 4
    for name in ("base_alpaca", "fft_gsm8k"):
        result = json.loads((workdir / "results" / "alpaca_eval" / f"{name}.json").read_text())
        assert result["judge"] == "weighted_alpaca_eval_local" and result["judge_model"] == "work/base_model"
        assert result["n_total"] == 3 and 0 <= result["win_rate"] <= 100
        assert result["config"]["task"]["eval_size"] == 3
    # An alpaca run's own samples are judged; any other model answers the instructions first.
    assert (workdir / "work" / "samples" / "base_alpaca.jsonl").is_file()
    assert (workdir / "work" / "alpaca_eval" / "samples" / "fft_gsm8k.jsonl").is_file()
    report = (workdir / "results" / "report.md").read_text()
    assert "| fft_gsm8k | arc_easy | acc,none |" in report and "| base_alpaca | weighted_alpaca_eval_local" in report


def test_the_harness_presets_plan_what_they_describe(tmp_path):
    cpu = planned_jobs(plan_preset(tmp_path, "lmeval alpaca_eval", "harness-cpu.yaml"))
    assert cpu["evaluate_lmeval"] == 2 and cpu["lmeval_tasks"] == 1 and cpu["evaluate_alpaca"] == 2
    assert cpu["generate_alpaca"] == 1 and cpu["generate"] == 1  # lota_gsm8k_s90 answers; base_alpaca's samples
    gpu = planned_jobs(plan_preset(tmp_path, "lmeval alpaca_eval", "gsm8k-commonsense-gpu.yaml", "harness-gpu.yaml"))
    assert gpu["evaluate_lmeval"] == 4 and gpu["evaluate_alpaca"] == 4 and "generate_alpaca" not in gpu
    assert gpu["train_dense"] == 2 and gpu["train_lota"] == 2 and gpu["train_lora"] == 2
