"""Stage report: a sweep's, task sequences' and merges' results (and the harnesses') as one Markdown
report (lota.analysis.markdown) with plots (lota.analysis.plots): the comparisons over seeds and the
paper's claims where the results hold their items' verdicts."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from lota.analysis.claims import claim_comparisons
from lota.analysis.comparison import parse_pair, place_pairs, sequence_mask_stability, stability_by_task
from lota.analysis.markdown import claims_section, render, whole_set_line
from lota.analysis.plots import forgetting_plot, plot_sequence, plot_task
from lota.analysis.results import (
    ALPACA_EVAL_REQUIRED,
    LMEVAL_REQUIRED,
    load_checked,
    load_merges,
    load_results,
    load_sequences,
    stems,
    with_items,
)
from lota.core.cli import arg, run_main
from lota.core.errors import UserError
from lota.core.io import atomic_path

log = logging.getLogger("lota.report")


@dataclass
class ReportArgs:
    out: Path = arg(help="output Markdown report")
    plots: Path = arg(help="folder for the plots, <task>.png and forgetting_<A>-<B>.png (linked from the report)")
    results: list[Path] = arg([], "results/<run>.json files of a sweep")
    sequences: list[Path] = arg([], "results/cl/<sequence>.json files of task sequences")
    merges: list[Path] = arg([], "results/merge/<merge>.json files of merged models")
    lmeval: list[Path] = arg([], "results/lmeval/<model>.json files of lm-evaluation-harness")
    alpaca_eval: list[Path] = arg([], "results/alpaca_eval/<model>.json files of AlpacaEval")
    masks: list[Path] = arg(
        [],
        "single-task mask files of the sweep's and the merges' runs, <task>[_seed<N>]_s<percent>[_<strategy>]"
        ".safetensors, whose seeds' masks are compared (mask stability)",
    )
    sequence_masks: list[Path] = arg(
        [],
        "masks of the sequences' later stages, work/cl/masks/<sequence>[_seed<N>].safetensors (overlap across seeds)",
    )
    pairs: list[str] = arg(
        [], "extra pairs A:B of name stems (names without _seed<N>) to compare, A - B, beside the standard ones"
    )
    benchmarks: Path | None = arg(
        None, "the folder of the jobs' benchmark files, whose wall times the claims section sums (the whole set)"
    )


def run(args: ReportArgs) -> None:
    """Write the report and its plots."""
    if not (args.results or args.sequences or args.merges or args.lmeval or args.alpaca_eval):
        raise UserError("--results, --sequences, --merges, --lmeval and --alpaca-eval name no results files")
    by_task = load_results(args.results)
    by_sequence = load_sequences(args.sequences)
    by_merge = load_merges(args.merges)
    lmeval = load_checked(args.lmeval, LMEVAL_REQUIRED, "results file of lm-eval")
    alpaca_eval = load_checked(args.alpaca_eval, ALPACA_EVAL_REQUIRED, "results file of AlpacaEval")
    groups = {("sweep", task): stems(results) for task, results in by_task.items()}
    groups |= {("sequence", tasks): stems(results) for tasks, results in by_sequence.items()}
    groups |= {("merge", tasks): stems(results) for tasks, results in by_merge.items()}
    pairs = place_pairs(map(parse_pair, args.pairs), groups)
    stability = stability_by_task(args.masks, [*by_task, *(task for tasks in by_merge for task in tasks)])
    relative = os.path.relpath(Path(args.plots).resolve(), Path(args.out).resolve().parent)
    # The text first: what it refuses stops the report before any plot is written.
    rows = claim_comparisons(*with_items(by_task, by_sequence, by_merge))
    overlap = sequence_mask_stability(args.sequence_masks)
    claims = claims_section(rows, stability, overlap, whole_set_line(args.benchmarks))
    text = render(
        by_task, by_sequence, by_merge, Path(relative).as_posix(), lmeval, alpaca_eval, pairs, stability, claims
    )
    for task, results in by_task.items():
        plot_task(task, results, args.plots / f"{task}.png")
    for tasks, results in by_sequence.items():
        plot_sequence(tasks, results, args.plots / forgetting_plot(tasks))
    with atomic_path(args.out) as tmp:
        tmp.write_text(text)
    log.info(
        "report on %d runs of %d tasks, %d task-sequence runs, %d merges and %d harness results -> %s",
        len(args.results),
        len(by_task),
        len(args.sequences),
        len(args.merges),
        len(lmeval) + len(alpaca_eval),
        args.out,
    )


if __name__ == "__main__":
    run_main(ReportArgs, run)
