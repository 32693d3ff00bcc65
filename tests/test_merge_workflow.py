"""Merges through the real DAG, on a tiny random Llama and a few GSM8K and MAWPS records."""

import json

import pytest
import torch
from safetensors import safe_open

from tests.conftest import plan_preset, planned_jobs, snakemake, tiny_workdir

METHODS = ["ta", "ties", "dareties", "darelinear", "lotasum"]
NAMES = [f"{method}_gsm8k+mawps" + ("_s90" if method == "lotasum" else "") for method in METHODS]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model, gsm8k_dir):
    merge = {"tasks": [["gsm8k", "mawps"]], "methods": METHODS, "density": 0.5}
    return tiny_workdir(tmp_path_factory.mktemp("merge"), tiny_model, gsm8k_dir, merge=merge)


def tensors(path):
    with safe_open(str(path), framework="pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}


@pytest.mark.slow  # about 3 min: every merge method's DAG, for real
def test_every_method_merges_the_single_task_runs_and_scores_each_task(workdir):
    done = snakemake(workdir, "--cores", "2", "merge")
    assert done.returncode == 0, done.stderr[-3000:]
    for name in NAMES:
        result = json.loads((workdir / "results" / "merge" / f"{name}.json").read_text())
        assert result["run"] == name and result["tasks"] == ["gsm8k", "mawps"]
        assert all(result["accuracy"][task]["n"] == 4 for task in ("gsm8k", "mawps"))
        assert all(len(result["accuracy"][task]["items"]) == 4 for task in ("gsm8k", "mawps"))
        assert result["merge"]["tensors"] > 0 and result["merge"]["wall_s"] > 0
        assert set(result["base"]) == {"gsm8k", "mawps"} and "merge" in result["stages"]
        single = "lota_{}_s90" if name.startswith("lotasum") else "fft_{}"
        assert [result["single_task"][task]["run"] for task in ("gsm8k", "mawps")] == [
            single.format("gsm8k"),
            single.format("mawps"),
        ]
    ties = json.loads((workdir / "results" / "merge" / "ties_gsm8k+mawps.json").read_text())
    assert ties["settings"]["method"] == "ties" and ties["settings"]["density"] == 0.5
    assert ties["config"]["runs"] == ["fft_gsm8k", "fft_mawps"]

    # The sparse sum moves the base only where one of the LoTA runs trained.
    base = tensors(workdir / "work" / "base_model" / "model.safetensors")
    summed = tensors(workdir / "work" / "merge" / "models" / "lotasum_gsm8k+mawps_s90" / "model.safetensors")
    trained = {}
    for task in ("gsm8k", "mawps"):
        for key, indices in tensors(workdir / "work" / "runs" / f"lota_{task}_s90" / "weights.safetensors").items():
            if key.endswith(".indices"):
                name = key.removesuffix(".indices")
                trained.setdefault(name, torch.zeros(base[name].numel(), dtype=torch.bool))[indices.long()] = True
    for name, tensor in base.items():
        changed = (summed[name] != tensor).flatten()
        assert not changed.any() if name not in trained else not (changed & ~trained[name]).any(), name
    assert any(((summed[name] != base[name]).flatten() & entries).any() for name, entries in trained.items())

    report = (workdir / "results" / "report.md").read_text()
    assert "## Merging" in report and "| lotasum_gsm8k+mawps_s90 | 1 |" in report

    # A lambda sweep adds one merge and its evaluations per method and lambda, reusing every run.
    plan = snakemake(workdir, "-n", "merge", overrides={"merge": {"sweep_scales": [0.5]}})
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = planned_jobs(plan.stdout + plan.stderr)
    assert jobs["merge_models"] == jobs["evaluate_merge"] == 5 and jobs["generate_merged"] == 10
    assert "results/merge/ties_gsm8k+mawps_l0.5.json" in plan.stdout + plan.stderr


def test_the_gpu_preset_plans_merges_of_gsm8k_and_commonsense(tmp_path):
    output = plan_preset(tmp_path, "merge", "gsm8k-commonsense-gpu.yaml")
    jobs = planned_jobs(output)
    assert jobs["merge_models"] == jobs["evaluate_merge"] == 8 and jobs["generate_merged"] == 16
    # LoTA at the merge's 90% on each task, and GSM8K's at the sequences' 99% (the report's continual part).
    assert jobs["train_dense"] == 2 and jobs["train_lota"] == 3
    assert "results/merge/ties_gsm8k+commonsense.json" in output
    assert "results/merge/lotasum_gsm8k+commonsense_s90_l0.5.json" in output
