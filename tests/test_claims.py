"""The paper's claims answered from results with replicates: which comparisons each claim makes, read in
LoTA's favour, their permutation p-values and Holm's adjustment, the verdicts, and the whole set's cost;
on the report's seeded results, whose answers are worked by hand."""

import pytest

from lota.analysis import stats
from lota.analysis.claims import ClaimComparison, answer, benchmark_wall_time, claim_comparisons
from lota.analysis.results import load_merges, load_results, load_sequences
from tests.test_report import seeded_merge, seeded_report, write_results  # noqa: F401 (a fixture)


def comparisons(args):
    return claim_comparisons(load_results(args.results), load_sequences(args.sequences), load_merges(args.merges))


def test_each_claim_compares_lota_with_its_baseline_in_lotas_favour(seeded_report):  # noqa: F811
    rows = comparisons(seeded_report)
    assert [(row.claim, row.where, row.a, row.b) for row in rows] == [
        (1, "mawps", "lota_mawps_s90", "fft_mawps"),
        (2, "mawps → arc_easy: mawps", "lotto_mawps-arc_easy_s90", "fft_mawps-arc_easy"),
        (3, "mawps + arc_easy", "lotasum_mawps+arc_easy_s90", "ta_mawps+arc_easy"),
    ]
    target, forgetting, merging = rows
    # LoTA's item means 1, 1, 1, .5, 1, 0 against FFT's 1, .5, 0, 0, 1, 0: better by 0, .5, 1, .5, 0, 0. Of the
    # 8 sign flips of the three nonzero differences, 2 reach |sum| 2: p = 0.25.
    assert target.better_by.mean == pytest.approx(1 / 3) and target.p == pytest.approx(0.25)
    assert target.a_values.values == pytest.approx((5 / 6, 4 / 6)) and target.seeds == (0, 1)
    # Forgetting, less is better: FFT's 1, .5, .5, 0 less LoTTO's 0, .5, 0, 0; flips of 1 and .5: p = 0.5.
    assert forgetting.better_by.mean == pytest.approx(0.375) and forgetting.p == pytest.approx(0.5)
    assert forgetting.figure == "forgetting mawps" and forgetting.a_values.values == pytest.approx((0.0, 0.25))
    # The sparse sum's pooled items 1, 1, 1, .5 against task arithmetic's 1, .5, 0, 0.
    assert merging.better_by.mean == pytest.approx(0.5) and merging.p == pytest.approx(0.25) and merging.items == 4
    # Holm over 0.25, 0.5, 0.25: 0.75 each; nothing is told apart on four to six items.
    assert [row.holm for row in rows] == pytest.approx([0.75, 0.75, 0.75])
    assert {row.verdict for row in rows} == {"cannot tell"}


def test_merges_are_compared_at_the_same_lambda_and_with_ties(seeded_report, tmp_path):  # noqa: F811
    extra = [
        seeded_merge("ties_mawps+arc_easy", "ties", 0, [0, 0], [0, 0]),
        seeded_merge("lotasum_mawps+arc_easy_s90_l0.5", "lotasum", 0, [1, 0], [0, 0]),
    ]
    seeded_report.merges += write_results(tmp_path / "merge", extra)
    merges = [(row.a, row.b) for row in comparisons(seeded_report) if row.claim == 3]
    assert merges == [
        ("lotasum_mawps+arc_easy_s90", "ties_mawps+arc_easy"),  # on seed 0, the one both ran
        ("lotasum_mawps+arc_easy_s90", "ta_mawps+arc_easy"),
    ]  # the l0.5 sum has no dense merge at lambda 0.5 to meet


def comparison(better_by, holm):
    difference = stats.Difference(better_by, better_by - 0.1, better_by + 0.1, 0.95)
    one = stats.summary([0.5])
    return ClaimComparison(1, "mawps", "a", "b", "accuracy", one, one, (0,), 100, difference, 0.1, holm, holm)


def test_the_verdict_reads_the_adjusted_p_and_the_sign():
    assert comparison(0.2, 0.01).verdict == "holds"
    assert comparison(-0.2, 0.01).verdict == "does not hold"
    assert comparison(0.2, 0.05).verdict == "cannot tell"  # at 0.05 it is not below
    assert answer([comparison(0.2, 0.01), comparison(0.3, 0.001)]) == "holds"
    assert (
        answer([comparison(0.2, 0.01), comparison(0.1, 0.2), comparison(0.0, 1.0)])
        == "mixed: holds in 1, cannot tell in 2"
    )


def test_the_whole_set_counts_every_benchmark_file_once(tmp_path):
    header = "s\th:m:s\tmax_rss\n"
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "fft_mawps.tsv").write_text(header + "120.5\t0:02:00\t5400.1\n")
    (tmp_path / "report.tsv").write_text(header + "1.5\t0:00:01\t300\n")
    assert benchmark_wall_time(tmp_path) == (2, 122.0)
    assert benchmark_wall_time(tmp_path / "none") == (0, 0.0)
