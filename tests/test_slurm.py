"""The SLURM profile (profiles/slurm) on a real single-node SLURM cluster on localhost.

tests/slurm/start_cluster.sh starts munged, slurmctld and slurmd (no systemd, cgroups or
accounting); the tiny model's LoTA DAG then runs twice, once locally and once through the
profile, one sbatch job per rule, and both must produce the same results and weights. Needs root
and SLURM (`apt-get install -y slurm-wlm munge`); skipped without them. The wall times of both
runs are printed (`pytest -s`) and written to slurm_timings.json in the test's tmp folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from tests.conftest import REPO, planned_jobs, tiny_workdir

SCRIPT = REPO / "tests" / "slurm" / "start_cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
TARGET = "results/lota_gsm8k_s90.json"
# Every job's output: data, base model, dense run, task vector, mask, LoTA run, export, samples.
OUTPUTS = [
    "work/data/gsm8k/train.jsonl",
    "work/data/gsm8k/eval.jsonl",
    "work/base_model/model.safetensors",
    "work/runs/fft_gsm8k/weights.safetensors",
    "work/runs/fft_gsm8k/log.jsonl",
    "work/task_vectors/gsm8k.safetensors",
    "work/masks/gsm8k_s90.safetensors",
    "work/runs/lota_gsm8k_s90/weights.safetensors",
    "work/models/lota_gsm8k_s90/model.safetensors",
    "work/samples/lota_gsm8k_s90.jsonl",
]
# Result keys that are measurements of the run (time, memory, speed), not results.
MEASURED = {"wall_s", "max_rss_mb", "train_wall_s", "tokens_per_s", "step_s", "peak_memory_mb"}
# SLURM runs: a hung status poll or a job the cluster cannot place must fail the test, not hang it.
RUN_TIMEOUT = 900
# Small enough for any test machine's node; gpu 0: no --gpus request.
SMALL_RESOURCES = {
    "light": {"mem_mb": 1000, "runtime": 10, "gpu": 0},
    "train": {"mem_mb": 2000, "runtime": 30, "gpu": 0, "threads": 0},
    "generate": {"mem_mb": 2000, "runtime": 30, "gpu": 0, "threads": 0},
}


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A cluster started for this module, stopped (and checked gone) afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the test SLURM cluster needs root: tests/slurm/start_cluster.sh starts munged, slurmctld, slurmd")
    missing = [tool for tool in ("slurmctld", "slurmd", "sbatch", "squeue", "munged") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing): apt-get install -y slurm-wlm munge")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.fail("snakemake-executor-plugin-slurm is not installed: pip install -e '.[test]'")
    state = tmp_path_factory.mktemp("slurm")
    env = os.environ | {"LOTA_SLURM_DIR": str(state)}

    def control(action):
        return subprocess.run(
            ["timeout", "-k", "10", "120", "bash", str(SCRIPT), action],
            env=env,
            capture_output=True,
            text=True,
        )

    try:
        started = control("start")
        if started.returncode != 0:
            reason = (started.stderr.strip().splitlines() or [f"exit status {started.returncode}"])[-1]
            pytest.skip(f"the test SLURM cluster did not start: {reason}")
        yield state
    finally:
        daemons = {path.stem: int(path.read_text()) for path in state.glob("*.pid") if path.read_text().strip()}
        stopped = control("stop")
        alive = {name: pid for name, pid in daemons.items() if _alive(pid)}
        assert stopped.returncode == 0 and not alive, f"daemons left running: {alive}\n{stopped.stderr}"
        system_conf = Path("/etc/slurm/slurm.conf")
        assert not (system_conf.is_symlink() and system_conf.readlink().parent == state), f"stop left {system_conf}"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _workdir(root: Path, tiny_model: Path, gsm8k_dir: Path) -> Path:
    """A workflow folder on the tiny model; the data comes from $LOTA_DATA_DIR (data_dir: null),
    so that the SLURM jobs only find it if the submitting environment reaches them."""
    return tiny_workdir(root, tiny_model, gsm8k_dir, data_dir=None, resources=SMALL_RESOURCES)


def _run(workdir: Path, *arguments, env) -> tuple[subprocess.CompletedProcess, float]:
    command = ["timeout", "-k", "30", str(RUN_TIMEOUT), sys.executable, "-m", "snakemake", TARGET, *arguments]
    command += ["--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    command += ["--configfile", str(workdir / "config.yaml")]
    started = time.monotonic()
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    return done, time.monotonic() - started


def _unmeasured(value):
    """A JSON value without its measurements (wall times, memory, speed)."""
    if isinstance(value, dict):
        return {key: _unmeasured(item) for key, item in value.items() if key not in MEASURED}
    return value


def _metadata(path: Path) -> dict | None:
    with safe_open(path, "pt") as weights:
        return weights.metadata()


def _same_output(ours: Path, theirs: Path):
    if ours.suffix == ".safetensors":  # equal tensors and metadata (whose byte order varies from run to run)
        assert _metadata(ours) == _metadata(theirs), ours
        ours_tensors, their_tensors = load_file(ours), load_file(theirs)
        assert ours_tensors.keys() == their_tensors.keys(), ours
        for name, tensor in ours_tensors.items():
            assert tensor.dtype == their_tensors[name].dtype and tensor.equal(their_tensors[name]), f"{ours}: {name}"
    elif ours.name == "log.jsonl":  # a training log: loss, lr and grad norm per step, and timings
        assert [_unmeasured(json.loads(line)) for line in ours.read_text().splitlines()] == [
            _unmeasured(json.loads(line)) for line in theirs.read_text().splitlines()
        ], ours
    else:
        assert ours.read_bytes() == theirs.read_bytes(), ours


@pytest.mark.slurm
def test_the_slurm_profile_runs_the_dag_like_a_local_run(slurm_cluster, tiny_model, gsm8k_dir, tmp_path):
    # The rules call `python` and read $LOTA_DATA_DIR: both reach the jobs through sbatch's
    # --export=ALL, from the environment snakemake was started in.
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "LOTA_DATA_DIR": str(gsm8k_dir),
    }
    local = _workdir(tmp_path / "local", tiny_model, gsm8k_dir)
    cluster = _workdir(tmp_path / "slurm", tiny_model, gsm8k_dir)

    done, local_s = _run(local, "--cores", "2", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    local_jobs = planned_jobs(done.stdout + done.stderr)
    # The profile as shipped, its placeholders included (the test cluster has partitions cpu and
    # gpu and no accounting); only status polling is made faster than the plugin's 40 s default.
    done, slurm_s = _run(
        cluster, "--workflow-profile", str(PROFILE), "--slurm-init-seconds-before-status-checks", "2", env=env
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]

    timings = {"local_s": round(local_s, 1), "slurm_s": round(slurm_s, 1), "target": TARGET}
    print(f"\nwall time of {TARGET}: local {local_s:.1f} s, through SLURM {slurm_s:.1f} s")
    (tmp_path / "slurm_timings.json").write_text(json.dumps(timings, indent=2) + "\n")

    # Every job of the local run but the Snakefile's localrules (here, scoring) was an sbatch job,
    # the GPU stages in the gpu partition and the rest in the cpu one, with the profile's account.
    jobs = _jobs()
    submitted = {rule: count for rule, count in local_jobs.items() if rule != "evaluate"}
    assert log.count("has been submitted with SLURM jobid") == len(jobs) == sum(submitted.values()), log[-5000:]
    assert {job["rule"] for job in jobs} == set(submitted), jobs
    assert all(job["state"] == "COMPLETED" and job["account"] == "your_account" for job in jobs), jobs
    gpu_rules = {job["rule"] for job in jobs if job["partition"] == "gpu"}
    assert gpu_rules == {"train_dense", "train_lota", "generate"}, jobs
    assert {job["partition"] for job in jobs} == {"cpu", "gpu"}, jobs

    ours, theirs = (json.loads((workdir / TARGET).read_text()) for workdir in (cluster, local))
    assert _unmeasured(ours) == _unmeasured(theirs)
    for output in OUTPUTS:
        _same_output(cluster / output, local / output)


def _jobs() -> list[dict]:
    """This cluster's jobs (still listed: MinJobAge is an hour) with partition, account and rule."""
    listing = subprocess.run(
        ["timeout", "30", "squeue", "--states=all", "--noheader", "--format=%i|%P|%a|%T|%k"],
        capture_output=True,
        text=True,
    )
    assert listing.returncode == 0, listing.stderr
    jobs = []
    for line in listing.stdout.splitlines():
        jobid, partition, account, state, comment = line.split("|", 4)
        rule = comment.removeprefix("rule_").split("_wildcards_")[0]
        jobs.append({"id": jobid, "partition": partition, "account": account, "state": state, "rule": rule})
    return jobs
