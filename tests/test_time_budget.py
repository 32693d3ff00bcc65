"""--time-budget (tests/conftest.py), with which .ci/run fits the slow tests into CI's time."""

import subprocess
import sys

from tests.conftest import REPO

TWO_TESTS = """
import time

def test_first():
    time.sleep(4)

def test_second():
    pass
"""


def run_pytest(test_file, budget):
    command = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-rs", "-o", "addopts=", str(test_file)]
    command += ["-p", "no:cacheprovider", "--time-budget", str(budget)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_a_test_that_would_start_after_the_budget_is_skipped_saying_so(tmp_path):
    test_file = tmp_path / "test_two.py"
    test_file.write_text(TWO_TESTS)
    within = run_pytest(test_file, 60)
    assert within.returncode == 0 and "2 passed" in within.stdout, within.stdout[-2000:]
    spent = run_pytest(test_file, 2)
    assert spent.returncode == 0 and "1 passed, 1 skipped" in spent.stdout, spent.stdout[-2000:]
    assert "the run's time budget of 2 s is spent" in spent.stdout
