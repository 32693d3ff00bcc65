"""Stage lmeval_tasks: lm-evaluation-harness tasks that read a local data folder instead of the hub
(lota.evaluation.harness_tasks)."""

from __future__ import annotations

from lota.core.cli import run_main
from lota.evaluation.harness_tasks import LmEvalTasksArgs, write_offline_tasks


def run(args: LmEvalTasksArgs) -> None:
    """Write lm-eval task YAMLs that read the local data folder."""
    write_offline_tasks(args)


if __name__ == "__main__":
    run_main(LmEvalTasksArgs, run)
