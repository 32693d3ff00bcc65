import json

import pytest

from lota.bench import BenchArgs, bench, ratios, table
from lota.errors import UserError


def test_bench_trains_every_run_on_one_batch_and_reports_ratios(tmp_path, tiny_model, capsys):
    args = BenchArgs(
        model=tiny_model,
        out=tmp_path / "engine.json",
        runs=["fft", "lota_s50", "lora_r2", "rosa_s50_r2"],
        batch_size=2,
        seq_len=16,
        warmup_steps=1,
        steps=2,
        lr=1e-3,
    )
    report = bench(args)
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
    assert fft["step_time_vs_fft"] == 1.0 and "memory_vs_lora" not in fft
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
    ]
    ratios(results)
    assert results[1]["step_time_vs_fft"] == 0.5 and results[1]["memory_vs_fft"] == 0.5
    assert results[1]["memory_vs_lora"] == 1.25
    lines = table(results).splitlines()
    assert lines[0].split() == [
        "run",
        "trainable",
        "step",
        "s",
        "tokens/s",
        "peak",
        "MB",
        "opt",
        "state",
        "MB",
        "step/FFT",
        "mem/FFT",
        "mem/LoRA",
    ]
    assert lines[2].split()[-3:] == ["0.500", "0.500", "1.250"] and lines[1].split()[-1] == "-"


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
