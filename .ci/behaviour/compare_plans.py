"""Compare the job plans of two checkouts: a dry run of every target (sweep, continual, merge, lmeval,
alpaca_eval) under two configs that name every method, strategy, sequence method, merge method and
harness, with and without a calibration budget of its own and RoSA's warm-up mask. Every job's
rule, inputs, outputs, resources and shell command must be the same; a command's options may come
in another order (argparse reads them the same).

Seconds where the DAG run (run.sh) takes minutes, and it covers the rules that one does not run.

    python .ci/behaviour/compare_plans.py OLD_REPO NEW_REPO     # exit 0: the same plan
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TARGETS = ["sweep", "continual", "merge", "lmeval", "alpaca_eval"]
JOB_LINES = re.compile(r"^(rule |localrule |    input:|    output:|    resources:)")


def configs(repo: Path) -> dict[str, dict]:
    config = yaml.safe_load((repo / "config.yaml").read_text())
    config |= {
        "data_dir": str(SHARED_DATA),
        "sweep": {
            "tasks": ["gsm8k", "mawps"],
            "sparsities": [90, 99.9],
            "methods": ["base", "fft", "lora", "lota", "rosa"],
            "mask_strategies": ["task_vector", "fisher", "gradient_mean", "base_magnitude", "random"],
        },
        "continual": {
            "sequences": [["gsm8k", "mawps"], ["mawps", "gsm8k", "arc_easy"]],
            "later_stages": {"lota": {"lr": 5e-5}, "calibration": {"epochs": 0.5}},
        },
        "merge": {
            "tasks": [["gsm8k", "mawps"]],
            "methods": ["ta", "ties", "dareties", "darelinear", "lotasum"],
            "sweep_scales": [0.5, 1.5],
        },
        "lmeval": {"models": ["lota_gsm8k_s90", "lotto_gsm8k-mawps_s90", "ties_gsm8k+mawps"], "tasks": ["gsm8k"]},
        "alpaca_eval": {"models": ["base_gsm8k", "fft_alpaca"], "judge": "local"},
    }
    config["tasks"]["arc_easy"] = {"train_size": 8, "eval_size": 4}
    separate = yaml.safe_load(yaml.safe_dump(config))
    separate["train"]["calibration"] = {"epochs": 0.25}
    separate["rosa"] = {"mask_warmup_steps": 2}
    separate["sweep"] |= {"methods": ["lota", "rosa"], "mask_strategies": ["task_vector", "gradient_mean"]}
    return {"plain": config, "separate": separate}


def plan(repo: Path, config: dict) -> list[str]:
    """The dry run's job lines and shell commands (options sorted), sorted."""
    with tempfile.TemporaryDirectory() as workdir:
        (Path(workdir) / "config.yaml").write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--snakefile", str(repo / "Snakefile")]
        done = subprocess.run(
            [*command, *TARGETS],
            cwd=workdir,
            capture_output=True,
            text=True,
            env=os.environ | {"PYTHONPATH": str(repo)},
        )
    if done.returncode != 0:
        raise SystemExit(f"{repo}: the dry run failed:\n{done.stderr[-3000:]}")
    lines = []
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("Shell command: "):
            options = re.split(r" (?=--)", shlex.join(shlex.split(line.removeprefix("Shell command: "))))
            lines.append(" | ".join([options[0], *sorted(options[1:])]))
        elif JOB_LINES.match(line):
            lines.append(line)
    return sorted(lines)


def main(old: Path, new: Path) -> int:
    same = True
    for name, config in configs(old).items():
        before, after = plan(old, config), plan(new, config)
        commands = sum(line.startswith("python -m") for line in before)
        if before == after:
            print(f"{name}: the same plan ({commands} jobs)")
            continue
        same = False
        print(f"{name}: the plans differ")
        for line in sorted(set(before) ^ set(after))[:20]:
            print(f"  {'-' if line in before else '+'} {line}")
    return 0 if same else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    raise SystemExit(main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()))
