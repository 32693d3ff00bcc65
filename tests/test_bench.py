import concurrent.futures
import json
from dataclasses import replace

import pytest
import torch

from lota import bench as bench_module
from lota.bench import BenchArgs, bench, measure, ratios, table
from lota.core.errors import UserError
from tests.conftest import REPO

TINY_CONFIG = REPO / "tests" / "gpu" / "llama-tiny.json"


def tiny_series(tmp_path, model, runs, **settings):
    """Two timed steps after one warm-up, of 2 x 16 tokens, of each run on the tiny model."""
    return BenchArgs(
        model=model,
        out=tmp_path / "engine.json",
        runs=runs,
        batch_size=2,
        seq_len=16,
        warmup_steps=1,
        steps=2,
        lr=1e-3,
        **settings,
    )


def test_bench_trains_every_run_on_one_batch_and_reports_ratios(tmp_path, tiny_model, capsys):
    report = bench(tiny_series(tmp_path, tiny_model, ["fft", "lota_s50", "lora_r2", "rosa_s50_r2"]))
    assert json.loads((tmp_path / "engine.json").read_text()) == report
    fft, lota, lora, rosa = report["runs"]
    covered = 2 * (16 * 16 + 8 * 16 * 2 + 16 * 16 + 3 * 32 * 16)  # q, k, v, o, gate, up, down of two layers
    assert lota["trainable_params"] == covered // 2 and lota["method"] == "lota"
    # rank 2 on q, o (16 -> 16), k, v (16 -> 8), gate, up, down (16 <-> 32) of two layers
    assert lora["trainable_params"] == 2 * 2 * (2 * (16 + 16) + 2 * (16 + 8) + 3 * (16 + 32))
    # RoSA: the same adapter and the same mask's entries
    assert rosa["trainable_params"] == lota["trainable_params"] + lora["trainable_params"] and rosa["method"] == "rosa"
    assert fft["trainable_params"] > lota["trainable_params"]
    for run in report["runs"]:
        assert run["step_s"] > 0 and run["peak_memory_mb"] > 0 and len(run["step_s_all"]) == 2
        assert run["losses"][-1] < run["losses"][0]  # the same batch, trained on: the loss falls
    # AdamW state: two fp32 moments per trainable entry, plus a step counter per tensor
    assert lota["optimizer_state_bytes"] < 0.55 * fft["optimizer_state_bytes"]
    assert fft["time_vs_fft"] == 1.0 and "memory_vs_lora" not in fft
    assert "memory_vs_lora" in lota and "memory_vs_lora" in rosa
    printed = capsys.readouterr().out
    assert "lota_s50" in printed and "rosa_s50_r2" in printed and "mem/LoRA" in printed


def test_ratios_and_table():
    results = [
        {
            "run": "fft",
            "method": "fft",
            "trainable_params": 10,
            "step_s": 2.0,
            "tokens_per_s": 5.0,
            "peak_memory_mb": 100.0,
            "optimizer_state_bytes": 80,
        },
        {
            "run": "lota_s90",
            "method": "lota",
            "trainable_params": 1,
            "step_s": 1.0,
            "tokens_per_s": 10.0,
            "peak_memory_mb": 50.0,
            "optimizer_state_bytes": 8,
        },
        {
            "run": "lora",
            "method": "lora",
            "trainable_params": 2,
            "step_s": 1.0,
            "tokens_per_s": 10.0,
            "peak_memory_mb": 40.0,
            "optimizer_state_bytes": 16,
        },
        {
            "run": "trainer_fft",
            "method": "trainer_fft",
            "trainable_params": 10,
            "step_s": 4.0,
            "tokens_per_s": 2.5,
            "peak_memory_mb": 120.0,
        },
    ]
    ratios(results)
    assert results[1]["time_vs_fft"] == 0.5 and results[1]["memory_vs_fft"] == 0.5
    assert results[1]["memory_vs_lora"] == 1.25
    assert results[0]["speedup_vs_peer"] == 2.0 and "speedup_vs_peer" not in results[2]  # lora has no peer here
    lines = table(results).splitlines()
    # only the columns some run has a figure in
    assert lines[0].split() == (
        ["run", "trainable", "step", "s", "tokens/s", "peak", "MB", "opt", "state", "MB"]
        + ["time/FFT", "mem/FFT", "mem/LoRA", "x", "peer"]
    )
    assert lines[1].split()[-2:] == ["-", "2.00"] and lines[2].split()[-4:] == ["0.500", "0.500", "1.250", "-"]
    assert lines[4].split()[5:7] == ["-", "2.000"]  # no optimizer state figure; twice FFT's time


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        (["dpo"], "unknown run 'dpo'"),
        (["rosa"], "unknown run 'rosa'; expected fft, lora"),  # a masked run names its sparsity
        (["lora_s90"], "unknown run 'lora_s90'"),
        (["lota_s90_r4"], "unknown run 'lota_s90_r4'"),  # LoTA has no adapter
        (["lota_s100"], r"sparsity s100 is 1.0, outside \[0, 1\)"),
        (["rosa_s100_r4"], r"sparsity s100 is 1.0, outside \[0, 1\)"),
        (["lota_s90.0"], "unknown run 'lota_s90.0'"),  # one spelling per sparsity
        ([], "at least one"),
    ],
)
def test_bad_runs_are_named(tmp_path, runs, message):
    with pytest.raises(UserError, match=message):
        bench(BenchArgs(model=tmp_path, out=tmp_path / "engine.json", runs=runs))
    assert not (tmp_path / "engine.json").exists()


def config_args(tmp_path, **settings):
    """A benchmark of a random model built from the tiny config, small enough for a test."""
    return BenchArgs(
        model_config=TINY_CONFIG, out=tmp_path / "engine.json", batch_size=2, seq_len=16, steps=2, **settings
    )


def test_a_random_model_from_a_config_trains_with_exact_random_masks(tmp_path):
    args = config_args(tmp_path, weights="bf16", activation_checkpointing=True)
    lota, fft = measure("lota_s90", args, None, None), measure("fft", args, None, None)
    config = json.loads(TINY_CONFIG.read_text())
    hidden, inner, kv = config["hidden_size"], config["intermediate_size"], config["hidden_size"] // 2
    per_layer = [hidden * hidden, kv * hidden, kv * hidden, hidden * hidden] + [inner * hidden] * 3
    assert lota["trainable_params"] == config["num_hidden_layers"] * sum(round(0.1 * n) for n in per_layer)
    assert fft["trainable_params"] == fft["model_params"] > lota["trainable_params"]
    for result in (lota, fft):
        assert result["matmul_s"] > 0 and result["step_vs_matmul"] == result["step_s"] / result["matmul_s"]
    # the same seed draws the same masks: RoSA trains LoTA's entries and its adapter
    rosa = measure("rosa_s90_r2", args, None, None)
    assert (
        rosa["trainable_params"] - lota["trainable_params"] == measure("lora_r2", args, None, None)["trainable_params"]
    )


def test_a_run_out_of_memory_is_a_result(tmp_path, monkeypatch):
    def out_of_memory(*arguments):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(bench_module, "train_step", out_of_memory)
    stopped = measure("fft", config_args(tmp_path), None, None)
    assert stopped["out_of_memory"] == "the warm-up step (optimizer state)" and stopped["peak_memory_mb"] > 0
    assert "step_s" not in stopped
    lora = {"run": "lora", "method": "lora", "step_s": 1.0, "peak_memory_mb": 10.0, "optimizer_state_bytes": 8}
    results = [lora, stopped]
    ratios(results)  # an FFT that ran out of memory is no baseline
    assert "time_vs_fft" not in lora
    assert table(results).splitlines()[2].endswith("the warm-up step (optimizer state)")


def test_the_results_file_holds_every_run_as_soon_as_it_ends(tmp_path, monkeypatch):
    seen = []

    def measure_after_reading_the_file(run, args, model_dir, mask):
        seen.append([result["run"] for result in json.loads(args.out.read_text())["runs"]] if args.out.exists() else [])
        return measure(run, args, model_dir, mask)

    def in_process(max_workers, mp_context):  # so that the wrapper above is what each worker runs
        return concurrent.futures.ThreadPoolExecutor(max_workers)

    monkeypatch.setattr(bench_module.concurrent.futures, "ProcessPoolExecutor", in_process)
    monkeypatch.setattr(bench_module, "measure", measure_after_reading_the_file)
    bench(config_args(tmp_path, runs=["lora_r2", "lota_s90", "fft"]))
    assert seen == [[], ["lora_r2"], ["lora_r2", "lota_s90"]]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": REPO}, "model_config builds a random model: give neither model nor mask_from with it"),
        ({"mask_from": REPO / "README.md"}, "give neither model nor mask_from"),
        ({"model_config": REPO / "missing.json"}, "model config not found: .*missing.json"),
        ({"runs": ["fft", "trainer_fft"]}, "the trainer runs load a model directory: give them without model_config"),
    ],
)
def test_a_model_config_stands_alone(tmp_path, settings, message):
    args = {"model_config": TINY_CONFIG, "out": tmp_path / "engine.json"} | settings
    with pytest.raises(UserError, match=message):
        bench(BenchArgs(**args))
    assert not (tmp_path / "engine.json").exists()


def test_the_trainer_peers_train_the_same_batch_and_parameters(tmp_path, tiny_model, capsys):
    runs = ["fft", "trainer_fft", "lora", "trainer_lora"]
    fft, trainer_fft, lora, trainer_lora = bench(tiny_series(tmp_path, tiny_model, runs, lora_rank=2))["runs"]
    assert trainer_fft["trainable_params"] == fft["trainable_params"]
    assert trainer_lora["trainable_params"] == lora["trainable_params"]  # the same adapters
    for peer in (trainer_fft, trainer_lora):
        assert peer["step_s"] > 0 and len(peer["step_s_all"]) == 2 and peer["peak_memory_mb"] > 0
        assert len(peer["losses"]) == 3 and peer["losses"][-1] < peer["losses"][0]
        assert peer["time_vs_fft"] == peer["step_s"] / fft["step_s"]
    # the same loss on the same batch before any step: the peers and lota compute one objective
    assert trainer_fft["losses"][0] == pytest.approx(fft["losses"][0], rel=1e-2)
    assert "trainer_lora" in capsys.readouterr().out


def test_the_real_job_trains_one_epoch_of_the_same_examples_through_lota_and_the_peers(tmp_path, tiny_model, capsys):
    records = tmp_path / "train.jsonl"
    records.write_text(
        "".join(
            json.dumps({"prompt": f"Question {i}: what is {i} plus {i}?" * (1 + i % 3), "response": f" {2 * i}"}) + "\n"
            for i in range(5)
        )
    )
    runs = ["fft", "trainer_fft", "lora", "trainer_lora"]
    series = replace(tiny_series(tmp_path, tiny_model, runs, lora_rank=2), job=records, max_length=40)
    fft, trainer_fft, lora, trainer_lora = bench(series)["runs"]
    for run in (fft, trainer_fft, lora, trainer_lora):
        assert run["steps"] == 3 and run["job_s"] > 0 and run["peak_memory_mb"] > 0  # 5 examples in batches of 2
        assert run["tokens"] == fft["tokens"]  # the same examples, truncated alike
    assert trainer_lora["trainable_params"] == lora["trainable_params"]
    assert fft["speedup_vs_peer"] == trainer_fft["job_s"] / fft["job_s"]
    assert lora["speedup_vs_peer"] == trainer_lora["job_s"] / lora["job_s"]
    printed = capsys.readouterr().out
    assert "one epoch of" in printed and "job s" in printed and "x peer" in printed


def test_the_job_needs_its_records(tmp_path, tiny_model):
    with pytest.raises(UserError, match="job records not found"):
        bench(tiny_series(tmp_path, tiny_model, ["fft"], job=tmp_path / "missing.jsonl"))
