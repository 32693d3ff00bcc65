"""The conda environments the rules name (--software-deployment-method conda).

conda cannot be installed on the machines this project is tested on (no conda channel is
reachable), so the environments are checked as files: each is a well-formed conda environment
spec, every rule names one that exists, the pins match the package's extras, and (slow, needs
the package index) the pip section of the base environment resolves as conda's own pip step
would resolve it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata

import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import REPO

ENVS = REPO / "envs"
RULES = REPO / "workflow" / "rules"
# A conda MatchSpec as environment files write them: name, then an optional version constraint.
MATCH_SPEC = re.compile(r"^[a-z0-9][a-z0-9_.-]*(\s*(==?|>=|<=|>|<|!=|~=)?\s*[0-9][0-9a-z.*,<>=!]*)?$")


def environment(name: str) -> dict:
    return yaml.safe_load((ENVS / f"{name}.yaml").read_text())


def pip_section(spec: dict) -> list[str]:
    (pip,) = [entry["pip"] for entry in spec["dependencies"] if isinstance(entry, dict)]
    return pip


@pytest.mark.parametrize("name", ["lota", "vllm"])
def test_environment_files_are_conda_specs(name):
    spec = environment(name)
    assert set(spec) <= {"name", "channels", "dependencies"}
    assert spec["channels"] and all(isinstance(channel, str) for channel in spec["channels"])
    conda_packages = [entry for entry in spec["dependencies"] if not isinstance(entry, dict)]
    assert all(MATCH_SPEC.match(entry) for entry in conda_packages), conda_packages
    assert "python=3.11" in conda_packages and "pip" in conda_packages  # pip installs the pip section
    for line in pip_section(spec):
        Requirement(line)  # raises on anything pip would not read


def test_every_rule_names_an_environment_that_exists():
    common = (RULES / "common.smk").read_text()
    # ENV and GENERATION_ENV, with every path either may take, relative to the rule files.
    names = {"ENV": re.search(r'^ENV = "([^"]+)"', common, re.M)[1]}
    choice = re.search(r'^GENERATION_ENV = "([^"]+)" if .* else ENV$', common, re.M)
    names["GENERATION_ENV"] = choice[1]
    for path in names.values():
        assert (RULES / path).resolve().parent == ENVS and (RULES / path).is_file(), path
    checked = defined = 0
    for smk in RULES.glob("*.smk"):
        text = smk.read_text()
        for name, body in re.findall(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)+)", text, re.M):
            declared = re.search(r"^    conda:\n        (\w+)$", body, re.M)
            assert declared and declared[1] in names, f"rule {name} in {smk.name} names no known environment"
            checked += 1
        defined += len(re.findall(r"^(?:rule|checkpoint) ", text, re.M))  # `use rule ... with:` inherits conda
    assert checked == defined > 0


def test_the_environments_pin_what_the_extras_pin():
    """envs/lota.yaml carries the eval extra; envs/vllm.yaml that and the vllm extra, for one torch."""
    requirements = [Requirement(text) for text in metadata.requires("lota")]
    for env, extras in (("lota", {"eval"}), ("vllm", {"eval", "vllm"})):
        pip = {str(Requirement(line)) for line in pip_section(environment(env))}
        assert "torch==2.13.0" in pip
        in_extras = [r for r in requirements if any(r.marker and r.marker.evaluate({"extra": e}) for e in extras)]
        pinned = {str(r).split(";")[0] for r in in_extras}
        assert pinned and pinned <= pip, (env, pinned - pip)


@pytest.mark.slow
def test_the_base_environment_resolves_as_conda_would_install_it(tmp_path):
    """conda writes the pip section to a requirements file and runs pip on it; the same
    resolution, dry, against the package index (Python 3.11, as the environment pins)."""
    requirements = tmp_path / "condaenv.requirements.txt"
    requirements.write_text("\n".join(pip_section(environment("lota"))))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        + ["--report", str(tmp_path / "report.json"), "-r", str(requirements)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    installed = {re.sub(r"[-_.]+", "-", item["metadata"]["name"].lower()): item for item in report["install"]}
    assert installed["torch"]["metadata"]["version"].startswith("2.13.0")
    assert {"transformers", "peft", "lm-eval", "alpaca-eval"} <= set(installed)
