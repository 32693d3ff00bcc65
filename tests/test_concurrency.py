"""Jobs that run at once (`snakemake --cores 2`) never write the same file or read a half-written one.

Fast, from a dry run of a sweep (base, FFT, LoRA, LoTA at two sparsities, the report): every job
declares outputs, a log and a benchmark of its own, no job writes inside a folder another job
writes (a training job replaces its whole run folder), and the benchmark files a job reports
without declaring them as inputs are its ancestors'. Slow: the sweep run two jobs at a time on the
tiny model creates only files that exactly one job declares, writes nothing outside its folder but
known caches, and gives the results of a run one job at a time.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest

from lota.core.config import PROTOCOL_RECORD
from tests.conftest import REPO, planned_jobs, snakemake, snakemake_command, tiny_workdir
from tests.test_atomic_outputs import JOB_FINISHED, JOB_LISTING, Job, assert_same_outputs, listed_jobs

SWEEP = {"tasks": ["gsm8k"], "sparsities": [50, 90]}
# Options naming a folder a stage writes into besides its declared outputs: a training run's
# folder (replaced as a whole), the report's plots.
FOLDER_OPTIONS = ("--out", "--plots")
# What the sweep may write outside its folder ($HOME and $TMPDIR point into the test's folder):
# the one report job's matplotlib font cache, and snakemake's own source cache.
KNOWN_CACHES = (".cache/matplotlib/", ".cache/snakemake/")
RUN_TIMEOUT = 900
# Paths in the system's or the user's scratch and cache folders, which every job would share.
FIXED_SCRATCH = re.compile(r"^(?:/tmp|/var/tmp|/dev/shm)(?:/|$)|^~/")


def claimed(job: Job) -> list[str]:
    """The paths a job writes: what it declares, and the folders it writes into."""
    tokens = shlex.split(job.command or "")
    folders = [tokens[index + 1] for index, token in enumerate(tokens[:-1]) if token in FOLDER_OPTIONS]
    return job.written() + folders


def within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def ancestors(jobs: list[Job]) -> dict[int, set[int]]:
    """Job id -> the ids of every job it (transitively) depends on, through its declared inputs."""
    parents = {
        job.jobid: {other.jobid for other in jobs for out in other.outputs for i in job.inputs if within(i, out)}
        for job in jobs
    }
    closure = {}

    def collect(jobid):
        if jobid not in closure:
            closure[jobid] = set(parents[jobid])
            for parent in parents[jobid]:
                closure[jobid] |= collect(parent)
        return closure[jobid]

    for jobid in parents:
        collect(jobid)
    return closure


def reported_benchmarks(job: Job) -> list[str]:
    """The benchmark files a job reads (lota.evaluate's --benchmark STAGE=PATH ...), undeclared."""
    tokens = shlex.split(job.command or "")
    if "--benchmark" not in tokens:
        return []
    values = []
    for token in tokens[tokens.index("--benchmark") + 1 :]:
        if token.startswith("-") or token == ">":
            break
        values.append(token.split("=", 1)[1])
    return values


def test_every_job_of_a_sweep_writes_paths_of_its_own_and_reads_only_finished_ones(tiny_model, gsm8k_dir, tmp_path):
    workdir = tiny_workdir(tmp_path, tiny_model, gsm8k_dir, sweep=SWEEP)
    plan = snakemake(workdir, "-n", "--forceall", "--printshellcmds", "sweep")
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = listed_jobs(plan.stdout + plan.stderr)
    assert len(jobs) == sum(planned_jobs(plan.stdout + plan.stderr).values()) and len(jobs) > 20

    declared = Counter(path for job in jobs for path in job.written())
    assert [path for path, count in declared.items() if count > 1] == []
    for job in jobs:
        assert job.log and job.benchmark or job.rule == "sweep", f"{job.rule} has no log or benchmark"
        for other in jobs:
            if other is not job:
                overlaps = [(p, q) for p in claimed(job) for q in claimed(other) if within(p, q)]
                assert not overlaps, f"{job.rule} {job.jobid} writes in {other.rule} {other.jobid}'s {overlaps}"

    depends_on = ancestors(jobs)
    benchmark_of = {job.benchmark: job.jobid for job in jobs}
    reporting = [job for job in jobs if reported_benchmarks(job)]
    assert {job.rule for job in reporting} == {"evaluate"}
    for job in reporting:
        for path in reported_benchmarks(job):
            assert benchmark_of.get(path) in depends_on[job.jobid], f"{job.rule} {job.jobid} reads {path} unfinished"

    # Absolute paths in commands are the configured inputs, never a fixed temporary path.
    configured = (str(tiny_model), str(workdir / "data"))
    for job in jobs:
        for token in shlex.split(job.command or ""):
            assert not token.startswith("/") or token.startswith(configured), f"{job.rule}: {token}"


def test_no_stage_names_a_fixed_temporary_path():
    """Scratch space comes from tempfile's unique folders (or atomic_path's per-process names),
    never from a fixed path that two jobs would share."""
    for module in sorted((REPO / "lota").rglob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not FIXED_SCRATCH.match(node.value), f"{module}:{node.lineno}: {node.value}"
            if isinstance(node, ast.Attribute) and node.attr in ("mktemp", "gettempdir"):
                pytest.fail(f"{module}:{node.lineno}: tempfile.{node.attr} invites a shared or racy path")


def files_in(folder: Path) -> set[str]:
    """Every file under `folder`, hidden ones included, by its path in it."""
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


class SweepRun(NamedTuple):
    workdir: Path
    output: str  # snakemake's
    created: set[str]  # the files created in the workdir, snakemake's .snakemake aside
    written_outside: set[str]  # the files created in $HOME or $TMPDIR


def run_sweep(root: Path, tiny_model: Path, gsm8k_dir: Path, cores: int) -> SweepRun:
    """The sweep run with `cores`, with $HOME and $TMPDIR in root/outside."""
    workdir = tiny_workdir(root / "workdir", tiny_model, gsm8k_dir, data_dir=str(gsm8k_dir), sweep=SWEEP)
    outside = root / "outside"
    (outside / "tmp").mkdir(parents=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("XDG_")}
    env |= {"HOME": str(outside), "TMPDIR": str(outside / "tmp")}
    command = snakemake_command(workdir, "sweep", "--cores", str(cores), "--printshellcmds")
    before = files_in(workdir)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    created = {path for path in files_in(workdir) - before if not within(path, ".snakemake")}
    # The protocol record is the workflow's own (written when the run starts), not a job's output.
    assert str(PROTOCOL_RECORD) in created, sorted(created)
    return SweepRun(workdir, done.stdout + done.stderr, created - {str(PROTOCOL_RECORD)}, files_in(outside))


def most_at_once(output: str) -> int:
    """The most jobs that ran at once, from the order of their start and finish lines."""
    events = sorted(
        [(match.start(), 1) for match in JOB_LISTING.finditer(output)]
        + [(match.start(), -1) for match in JOB_FINISHED.finditer(output)]
    )
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


@pytest.mark.slow  # about 6 minutes; .ci/run runs it with the slow tests
def test_two_jobs_at_a_time_write_only_their_own_files_and_the_results_of_one_at_a_time(
    tiny_model, gsm8k_dir, tmp_path
):
    parallel = run_sweep(tmp_path / "parallel", tiny_model, gsm8k_dir, cores=2)
    assert most_at_once(parallel.output) == 2, parallel.output[-5000:]
    jobs = listed_jobs(parallel.output)
    for path in parallel.created:
        owners = [f"{job.rule} {job.jobid}" for job in jobs if any(within(path, out) for out in job.written())]
        assert len(owners) == 1, f"{path} is declared by {owners}"
    assert all(path.startswith(KNOWN_CACHES) for path in parallel.written_outside), parallel.written_outside

    sequential = run_sweep(tmp_path / "sequential", tiny_model, gsm8k_dir, cores=1)
    # The report's tables give train times, which differ between any two runs; its figures are
    # the results compared here.
    assert_same_outputs(parallel.workdir, sequential.workdir, skip=frozenset({"results/report.md"}))
