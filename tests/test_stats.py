"""The comparison statistics on item tables small enough that each answer is computed by hand."""

import numpy as np
import pytest
import torch

from lota.analysis.stats import (
    holm,
    item_differences,
    mask_agreement,
    mcnemar_exact,
    minimum_detectable_difference,
    paired_bootstrap,
    paired_permutation,
    summary,
)
from lota.core.errors import UserError


def column(*scores):
    """One seed's scores as an (items, 1) table."""
    return np.array(scores, dtype=float)[:, None]


def test_a_summary_over_seeds():
    three = summary([0.2, 0.4, 0.6])
    assert three.mean == pytest.approx(0.4) and three.std == pytest.approx(0.2) and three.values == (0.2, 0.4, 0.6)
    assert summary([0.5]).std is None  # one seed has no spread
    with pytest.raises(UserError, match="at least one seed"):
        summary([])


def test_items_are_averaged_over_seeds_before_they_are_paired():
    a = np.array([[1, 1], [1, 0], [0, 0]])  # item means 1, 0.5, 0
    b = np.array([[0, 0], [1, 1], [0, 1]])  # item means 0, 1, 0.5
    assert item_differences(a, b).tolist() == [1.0, -0.5, -0.5]
    with pytest.raises(UserError, match=r"same items, got \(3, 2\) and \(2, 2\)"):
        item_differences(a, b[:2])


def test_the_paired_bootstrap_interval():
    # Methods that differ by the same amount on every item: no spread, a point interval.
    same = paired_bootstrap(column(1, 1, 0, 0), column(0, 0, -1, -1))
    assert (same.mean, same.low, same.high) == (1.0, 1.0, 1.0)
    # 400 items, a better on 100 and worse on 20: mean difference 80/400 = 0.2; the differences'
    # sd is sqrt((120/400) - 0.2**2) = 0.5099 (population), so the normal interval is
    # 0.2 +- 1.96 * 0.5099 / sqrt(400) = 0.2 +- 0.0500; the percentile bootstrap lands within 0.005.
    a = column(*([1] * 100 + [0] * 20 + [1] * 140 + [0] * 140))
    b = column(*([0] * 100 + [1] * 20 + [1] * 140 + [0] * 140))
    found = paired_bootstrap(a, b, resamples=20_000)
    assert found.mean == pytest.approx(0.2)
    assert found.low == pytest.approx(0.15, abs=0.005) and found.high == pytest.approx(0.25, abs=0.005)
    assert paired_bootstrap(a, b, resamples=2_000) == paired_bootstrap(a, b, resamples=2_000)  # seeded


def test_the_exact_mcnemar_p_value():
    # Discordant pairs: a right and b wrong on 1 item, the reverse on 5. Under the null each
    # discordant item is a fair coin: p = 2 * P(X <= 1), X ~ Bin(6, 1/2) = 2 * (1 + 6) / 64.
    a = np.array([1, 0, 0, 0, 0, 0, 1, 1, 0], dtype=bool)
    b = np.array([0, 1, 1, 1, 1, 1, 1, 1, 0], dtype=bool)
    assert mcnemar_exact(a, b) == pytest.approx(14 / 64)
    assert mcnemar_exact(b, a) == pytest.approx(14 / 64)
    assert mcnemar_exact(a, a) == 1.0  # no discordant item
    # 0 against 6: p = 2 / 64
    assert mcnemar_exact(np.zeros(6, dtype=bool), np.ones(6, dtype=bool)) == pytest.approx(2 / 64)
    with pytest.raises(UserError, match="same items"):
        mcnemar_exact(a, b[:3])


def test_holm_adjusts_in_the_given_order():
    # Sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04, raised to the step before it, 0.06.
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_the_minimum_detectable_difference():
    # Differences 1, 0, 0, -1: sample sd sqrt(2/3); (1.959964 + 0.841621) * 0.816497 / sqrt(4) = 1.143742.
    found = minimum_detectable_difference(column(1, 0, 0, 0), column(0, 0, 0, 1))
    assert found == pytest.approx(1.143742, abs=1e-6)
    # The same four differences four times: sample sd sqrt(8/15); 2.801585 * 0.730297 / sqrt(16) = 0.511497.
    more = minimum_detectable_difference(column(*[1, 0, 0, 0] * 4), column(*[0, 0, 0, 1] * 4))
    assert more == pytest.approx(0.511497, abs=1e-6)
    with pytest.raises(UserError, match="at least two items"):
        minimum_detectable_difference(column(1), column(0))


def test_mask_agreement():
    a = {"w": torch.tensor([[1, 1, 0, 0]], dtype=torch.bool), "v": torch.tensor([1, 0], dtype=torch.bool)}
    b = {"w": torch.tensor([[1, 0, 1, 0]], dtype=torch.bool), "v": torch.tensor([1, 0], dtype=torch.bool)}
    found = mask_agreement(a, b)
    # Trainable in both: w[0], v[0]; in either: w[0], w[1], w[2], v[0]: Jaccard 2/4.
    assert found.jaccard == 0.5
    assert found.agreement == {"v": 1.0, "w": 0.5}  # w agrees on entries 0 and 3 of 4
    with pytest.raises(UserError, match="cover different tensors: v"):
        mask_agreement(a, {"w": b["w"]})
    with pytest.raises(UserError, match=r"w: mask shapes \(1, 4\) and \(4,\) differ"):
        mask_agreement(a, {"w": b["w"].view(-1), "v": b["v"]})


def test_the_permutation_p_counts_the_sign_flips_as_extreme_as_the_items_differences():
    # Five items all better: of the 32 sign flips, all + and all - reach |mean| 1: p = 2/32.
    assert paired_permutation(np.ones((5, 2)), np.zeros((5, 2))) == pytest.approx(0.0625)
    # Differences 1, 0, -1, 1 (zeros flip to themselves): every flip of the three nonzero ones has an odd sum,
    # so |mean| >= 0.25 always: p = 1.
    a, b = np.array([[1], [1], [0], [1]]), np.array([[0], [1], [1], [0]])
    assert paired_permutation(a, b) == pytest.approx(1.0)
    # Seed means first: 0.5, 0.5, 0 against 0: flips of two halves, 2 of 4 reach |mean| 1/3.
    assert paired_permutation(np.array([[1, 0], [0, 1], [0, 0]]), np.zeros((3, 2))) == pytest.approx(0.5)
    assert paired_permutation(np.ones((3, 1)), np.ones((3, 1))) == 1.0  # no item differs
