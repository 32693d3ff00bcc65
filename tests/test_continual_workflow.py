"""Task sequences through the real DAG, on a tiny random Llama and a few GSM8K, MAWPS and ARC records."""

import json

import pytest
import torch
from safetensors import safe_open

from lota.deltas.masks import load_mask
from tests.conftest import plan_preset, planned_jobs, snakemake, tiny_workdir

METHODS = ["fft", "lora", "lota", "lotto", "lottoflip"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model, gsm8k_dir):
    continual = {"sequences": [["gsm8k", "mawps"]], "methods": METHODS, "sparsity": 90}
    return tiny_workdir(tmp_path_factory.mktemp("continual"), tiny_model, gsm8k_dir, continual=continual)


def tensors(path):
    with safe_open(str(path), framework="pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}


def delta_entries(path):
    """name -> set of flat indices a LoTA run's sparse delta trains."""
    return {
        name.removesuffix(".indices"): set(tensor.tolist())
        for name, tensor in tensors(path).items()
        if name.endswith(".indices")
    }


@pytest.mark.slow  # about 4 minutes; .ci/run runs it with the slow tests
def test_every_method_runs_the_sequence_and_lotto_keeps_the_deltas_disjoint(workdir):
    done = snakemake(workdir, "--cores", "2", "continual")
    assert done.returncode == 0, done.stderr[-3000:]
    results = {}
    for method in METHODS:
        name = f"{method}_gsm8k-mawps" + ("_s90" if method.startswith("lot") else "")
        results[method] = json.loads((workdir / "results" / "cl" / f"{name}.json").read_text())
        result = results[method]
        assert result["run"] == name and result["tasks"] == ["gsm8k", "mawps"]
        assert [stage["trained_on"] for stage in result["stages"]] == [None, "gsm8k", "mawps"]
        assert all(stage["accuracy"]["mawps"]["n"] == 4 for stage in result["stages"])
        assert set(result["forgetting"]) == {"gsm8k"} and result["stages"][2]["trainable_params"] > 0
    assert results["lora"]["lora_rank"] == 16 and results["lotto"]["sparsity"] == 0.9
    assert results["lotto"]["mask_overlap"] == {"1-2": 0} and results["lottoflip"]["mask_overlap"] == {"1-2": 0}
    assert results["fft"]["mask_overlap"] is None
    assert set(results["fft"]["training_jobs"]) == {"1:train", "2:train"}
    assert set(results["lottoflip"]["training_jobs"]) == {"1:calibrate", "1:train", "2:calibrate", "2:train"}
    assert results["lotto"]["config"]["train_calibration"]["first_stage_run"] == "fft_gsm8k"

    # Stage 1 of every LoTA method is the single-task run; stage 2's sparse delta touches none of its entries.
    first = delta_entries(workdir / "work" / "runs" / "lota_gsm8k_s90" / "weights.safetensors")
    for method in ("lotto", "lottoflip"):
        second = delta_entries(workdir / "work" / "cl" / "runs" / f"{method}_gsm8k-mawps_s90" / "weights.safetensors")
        assert sum(len(entries) for entries in second.values()) > 0
        assert all(not (first.get(name, set()) & entries) for name, entries in second.items())
    # Without the constraint the stages' masks share entries.
    assert results["lota"]["mask_overlap"]["1-2"] > 0

    # The final LoTTO model differs from the stage-1 model only where stage 2's mask lets it.
    before = tensors(workdir / "work" / "models" / "lota_gsm8k_s90" / "model.safetensors")
    after = tensors(workdir / "work" / "cl" / "models" / "lotto_gsm8k-mawps_s90" / "model.safetensors")
    mask = load_mask(workdir / "work" / "cl" / "masks" / "lotto_gsm8k-mawps_s90.safetensors")
    for name, tensor in before.items():
        changed = after[name] != tensor
        assert not changed.any() if name not in mask else not (changed & ~mask[name]).any(), name

    # A dense stage's export holds its weights as trained, on the stage-1 model's config.
    weights = tensors(workdir / "work" / "cl" / "runs" / "fft_gsm8k-mawps" / "weights.safetensors")
    model = tensors(workdir / "work" / "cl" / "models" / "fft_gsm8k-mawps" / "model.safetensors")
    assert all(torch.equal(model[name], tensor) for name, tensor in weights.items())

    # The flipped calibration trained only what stage 1 left frozen.
    calibration = workdir / "work" / "cl" / "calibration" / "flip" / "lota_gsm8k_s90" / "mawps"
    flip = delta_entries(calibration / "weights.safetensors")
    assert all(not (first.get(name, set()) & entries) for name, entries in flip.items())

    report = (workdir / "results" / "report.md").read_text()
    assert "## Continual learning" in report and "| lotto_gsm8k-mawps_s90 | s = 90% |" in report
    png = workdir / "results" / "plots" / "forgetting_gsm8k-mawps.png"
    assert png.read_bytes().startswith(b"\x89PNG")

    # A third task reuses both stages and adds one: its calibration, mask, training and evaluations.
    plan = snakemake(workdir, "-n", "results/cl/lotto_gsm8k-mawps-arc_easy_s90.json")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert planned_jobs(plan.stdout + plan.stderr) == {
        "prepare_data": 1,
        "generate": 1,
        "generate_on": 5,
        "calibrate_stage": 1,
        "stage_task_vector": 1,
        "stage_mask": 1,
        "train_stage": 1,
        "export_stage": 1,
        "evaluate_sequence": 1,
    }
    assert "--exclude work/masks/gsm8k_s90.safetensors work/cl/masks/lotto_gsm8k-mawps_s90.safetensors" in (
        snakemake(workdir, "-n", "-p", "results/cl/lotto_gsm8k-mawps-arc_easy_s90.json").stdout
    )


def test_the_gpu_preset_plans_gsm8k_then_commonsense(tmp_path):
    output = plan_preset(tmp_path, "continual", "gsm8k-commonsense-gpu.yaml")
    jobs = planned_jobs(output)
    assert jobs["evaluate_sequence"] == 5 and jobs["train_stage"] == 5 and jobs["calibrate_stage"] == 2
    assert "results/cl/lottoflip_gsm8k-commonsense_s99.json" in output
    assert "results/plots/forgetting_gsm8k-commonsense.png" in output
