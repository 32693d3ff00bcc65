"""A job killed at any moment leaves no output that a later stage would accept.

The tiny model's LoTA DAG runs once uninterrupted, as the reference. In a second folder snakemake
is then started again and again, each time SIGKILLed with all its jobs (one process group) at a
seeded random moment inside the next stage of the DAG; after every kill each file under work/ and
results/ must be the reference's (timings aside) and a directory output must be whole.
`snakemake --unlock` and `--rerun-incomplete` carry on from there until a run completes, whose
outputs must equal the reference's. Where the kills landed is printed (`pytest -s`).

The helpers that read snakemake's job listing and compare two runs' outputs serve
tests/test_concurrency.py too.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import snakemake, snakemake_command, tiny_workdir
from tests.test_slurm import _same_output, _unmeasured

TARGET = "results/lota_gsm8k_s90.json"
SEED = 0
# The folders of the stages' outputs (logs/ and benchmarks/ hold snakemake's records of jobs).
OUTPUT_FOLDERS = ("work", "results")
# Hidden files beside or in outputs: lota.core.io.atomic_path's temporaries (a kill mid-write leaves
# them, the job's rerun removes them), and the timestamp snakemake puts in a directory output.
ATOMIC_TEMPORARY = re.compile(r"^\..+\.tmp-\d+$")
DIRECTORY_TIMESTAMP = ".snakemake_timestamp"
# A job in snakemake's output: "rule NAME:" ("localrule" when run here, "checkpoint" for one), its fields indented,
# and with --printshellcmds its command; and the line that says it finished.
JOB_STARTED = re.compile(r"^(?:local)?(?:rule|checkpoint) (?P<rule>\w+):$", re.M)
JOB_LISTING = re.compile(JOB_STARTED.pattern + r"\n(?P<fields>(?: {4}.*\n)*)(?:Shell command: (?P<command>.*))?", re.M)
JOB_FINISHED = re.compile(r"^Finished jobid: \d+ \(Rule: \w+\)$", re.M)
RUN_TIMEOUT = 900


@dataclass
class Job:
    """One job as snakemake lists it (in a dry run, or as it starts it)."""

    rule: str
    jobid: int
    inputs: list[str]
    outputs: list[str]
    log: list[str]
    benchmark: str | None
    command: str | None

    def written(self) -> list[str]:
        """The paths the job declares it writes."""
        return self.outputs + self.log + ([self.benchmark] if self.benchmark else [])


def listed_jobs(output: str) -> list[Job]:
    """Every job snakemake listed, in the order listed (a --cores 1 run's: the order run)."""
    jobs = []
    for listing in JOB_LISTING.finditer(output):
        fields = dict(line.strip().split(": ", 1) for line in listing["fields"].splitlines())
        paths = {name: fields[name].split(", ") if name in fields else [] for name in ("input", "output", "log")}
        jobs.append(
            Job(
                rule=listing["rule"],
                jobid=int(fields["jobid"]),
                inputs=paths["input"],
                outputs=paths["output"],
                log=paths["log"],
                benchmark=fields.get("benchmark"),
                command=None if listing["command"] == "None" else listing["command"],  # a rule without one
            )
        )
    return jobs


def visible_files(folder: Path) -> dict[Path, Path]:
    """Every file under `folder` by its path in it, but hidden files and what hidden folders hold."""
    return {
        path.relative_to(folder): path
        for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    }


def output_files(workdir: Path) -> dict[Path, Path]:
    """Every visible file under the output folders, by its path in the workdir."""
    return {
        Path(folder) / relative: path
        for folder in OUTPUT_FOLDERS
        for relative, path in visible_files(workdir / folder).items()
    }


def hidden_leftovers(workdir: Path) -> list[Path]:
    """The hidden files and folders under the output folders, snakemake's directory timestamps aside."""
    return sorted(
        path.relative_to(workdir)
        for folder in OUTPUT_FOLDERS
        for path in (workdir / folder).rglob(".*")
        if path.name != DIRECTORY_TIMESTAMP
    )


def assert_same_output(ours: Path, theirs: Path) -> None:
    """Equal outputs, timings aside: test_slurm's comparison, and JSON without its measurements."""
    if ours.suffix == ".json":
        assert _unmeasured(json.loads(ours.read_text())) == _unmeasured(json.loads(theirs.read_text())), ours
    else:
        _same_output(ours, theirs)


def assert_same_outputs(ours: Path, theirs: Path, skip: frozenset[str] = frozenset()) -> None:
    """Two workdirs hold the same output files (but `skip`, paths in the workdir) with equal contents."""
    our_files, their_files = output_files(ours), output_files(theirs)
    assert sorted(map(str, our_files)) == sorted(map(str, their_files))
    for relative, path in our_files.items():
        if str(relative) not in skip:
            assert_same_output(path, their_files[relative])


def restart(workdir: Path, listing: Path) -> subprocess.Popen:
    """snakemake on TARGET as a user reruns it after a kill: --unlock (a killed snakemake leaves
    its lock), then --rerun-incomplete, in a session of its own so that it is killed with its jobs;
    its output goes to `listing`."""
    unlocked = snakemake(workdir, "--unlock", TARGET)
    assert unlocked.returncode == 0, unlocked.stderr[-3000:]
    command = snakemake_command(workdir, TARGET, "--cores", "1", "--rerun-incomplete")
    with open(listing, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_stage(process: subprocess.Popen, listing: Path, rules: set[str]) -> str | None:
    """Wait until a job of one of `rules` starts (its rule) or snakemake exits first (None)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while process.poll() is None:
        started = [job["rule"] for job in JOB_STARTED.finditer(listing.read_text()) if job["rule"] in rules]
        if started:
            return started[0]
        assert time.monotonic() < deadline, f"no job of {sorted(rules)} started within {RUN_TIMEOUT} s"
        time.sleep(0.05)
    return None


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILL snakemake and its jobs, and wait until none of them runs (zombies cannot write)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 30
    while _running_in_group(process.pid):
        assert time.monotonic() < deadline, f"processes of group {process.pid} outlived SIGKILL"
        time.sleep(0.05)


def _running_in_group(group: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After "pid (comm)": state, ppid, pgrp; comm may hold spaces, so split after its ")".
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:  # gone meanwhile
            continue
        if int(pgrp) == group and state != "Z":
            return True
    return False


def stage_running(listing: Path) -> str | None:
    """The rule of the job a --cores 1 run was in, from its output; None between jobs."""
    output = listing.read_text()
    events = [(match.start(), match["rule"]) for match in JOB_STARTED.finditer(output)]
    events += [(match.start(), None) for match in JOB_FINISHED.finditer(output)]
    return max(events)[1] if events else None


def assert_no_unfinished_output(workdir: Path, reference: Path) -> None:
    """Each output file present is the reference's, each directory output present is whole, and
    each hidden file is an atomic temporary."""
    for relative, path in output_files(workdir).items():
        assert (reference / relative).is_file(), f"{relative}: no such output in the reference run"
        assert_same_output(path, reference / relative)
    for folder in OUTPUT_FOLDERS:
        for timestamp in (reference / folder).rglob(DIRECTORY_TIMESTAMP):
            directory = timestamp.parent.relative_to(reference)
            if (workdir / directory).exists():
                assert visible_files(workdir / directory).keys() == visible_files(reference / directory).keys(), (
                    directory
                )
    for leftover in hidden_leftovers(workdir):
        assert ATOMIC_TEMPORARY.match(leftover.name), f"{leftover}: a hidden file that is no atomic temporary"


@pytest.mark.slow  # about 4 minutes; .ci/run runs it with the slow tests
def test_killed_stages_leave_only_finished_outputs_and_reruns_finish_them(tiny_model, gsm8k_dir, tmp_path):
    reference = tiny_workdir(tmp_path / "reference", tiny_model, gsm8k_dir, data_dir=str(gsm8k_dir))
    done = snakemake(reference, "--cores", "1", TARGET)
    assert done.returncode == 0, done.stderr[-3000:]
    stages = listed_jobs(done.stdout + done.stderr)
    # One job per rule, so that a rule names a stage.
    assert len({job.rule for job in stages}) == len(stages) >= 9, [job.rule for job in stages]
    # Each stage's wall time in the reference run, from snakemake's benchmark of it.
    seconds = {job.rule: float((reference / job.benchmark).read_text().splitlines()[1].split()[0]) for job in stages}

    # Round k starts snakemake again (the killed job reruns) and kills it at a random moment of
    # stage k's reference time after stage k starts: mostly inside stage k, sometimes past it.
    # Jobs that need not wait for each other (model_scope, prepare_data) may run in another order
    # than the reference's, so a round waits for the first of stage k and the stages after it.
    killed = tiny_workdir(tmp_path / "killed", tiny_model, gsm8k_dir, data_dir=str(gsm8k_dir))
    draw = random.Random(SEED)
    kills = []
    for round_number in range(len(stages)):
        listing = tmp_path / f"round-{round_number}.log"
        process = restart(killed, listing)
        rule = wait_for_stage(process, listing, {job.rule for job in stages[round_number:]})
        if rule is None:
            break  # the last kill landed past the stages left, and this run went on to the end
        delay = draw.uniform(0, seconds[rule])
        time.sleep(delay)
        kill_session(process)
        kills.append((rule, delay, stage_running(listing), [str(path) for path in hidden_leftovers(killed)]))
        assert_no_unfinished_output(killed, reference)
    else:
        listing = tmp_path / "final.log"
        process = restart(killed, listing)
        process.wait(timeout=RUN_TIMEOUT)
    print(f"\nkills (seed {SEED}): stage waited for, +seconds, the job killed, temporaries left")
    print(
        "\n".join(
            f"  {rule} +{delay:.1f} s: {landed or 'between jobs'} {left or ''}" for rule, delay, landed, left in kills
        )
    )
    assert process.returncode == 0, listing.read_text()[-3000:]
    # Most kills hit a job, and in several stages.
    assert len({landed for _, _, landed, _ in kills} - {None}) >= len(stages) // 2, kills

    assert_same_outputs(killed, reference)
    assert not hidden_leftovers(killed)
