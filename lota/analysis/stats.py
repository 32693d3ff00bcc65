"""Statistics for comparing methods on the same test items over several seeds.

A comparison's data is an item table: per method, a 0/1 (or fractional) score per test item and
seed, as an array of shape (items, seeds), the same items in the same order for every method.

- summary: mean and standard deviation over seeds, and each seed's value;
- paired_bootstrap: the mean difference of two methods with a percentile interval from
  resampling items, each item's score first averaged over the seeds;
- mcnemar_exact: the exact McNemar p-value of one seed's two methods (statsmodels);
- paired_permutation: the p-value of a sign-flip permutation test of the items' differences (scipy),
  one test over all seeds whatever the items' scores are;
- holm: Holm's step-down adjustment of a table's p-values (statsmodels);
- minimum_detectable_difference: the smallest mean difference the items could detect;
- mask_agreement: how far two masks (e.g. of two seeds) pick the same entries.

scipy and statsmodels do the tests; what is here by hand is the glue, each function small and
tested on item tables whose answers are computed by hand (tests/test_stats.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from lota.core.errors import UserError


@dataclass(frozen=True)
class Summary:
    """A method's result over seeds: the mean, the sample standard deviation (None for one seed)
    and every seed's value, in seed order."""

    mean: float
    std: float | None
    values: tuple[float, ...]


@dataclass(frozen=True)
class Difference:
    """Mean of method a less method b over the items, with its interval."""

    mean: float
    low: float
    high: float
    confidence: float


def summary(values: list[float]) -> Summary:
    if not values:
        raise UserError("a summary needs at least one seed's value")
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return Summary(float(np.mean(values)), std, tuple(float(value) for value in values))


def item_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per item, a's score less b's, each averaged over its seeds; a and b are (items, seeds)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0] or a.shape[0] == 0:
        raise UserError(f"paired scores need (items, seeds) tables of the same items, got {a.shape} and {b.shape}")
    return a.mean(axis=1) - b.mean(axis=1)


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> Difference:
    """The mean item difference of a less b, with a percentile bootstrap interval over items.

    Percentile, not BCa: BCa's acceleration is undefined when every item differs equally (e.g.
    two methods that agree on every item), which small test sets produce; the percentile
    interval is then the point itself."""
    differences = item_differences(a, b)
    result = stats.bootstrap(
        (differences,),
        np.mean,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return Difference(float(differences.mean()), float(interval.low), float(interval.high), confidence)


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value of two methods' correct (1) / wrong (0) answers on the same items."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise UserError(f"McNemar needs one seed's answers on the same items, got shapes {a.shape} and {b.shape}")
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    if table[0][1] + table[1][0] == 0:
        return 1.0  # no item tells the methods apart
    return float(mcnemar(table, exact=True).pvalue)


def paired_permutation(a: np.ndarray, b: np.ndarray, resamples: int = 9_999, seed: int = 0) -> float:
    """Two-sided p-value of a paired permutation test of the mean item difference a - b (each item
    averaged over its seeds): under the null each item's difference is as likely with either sign.
    Exact where 2^items <= resamples, else `resamples` random sign flips."""
    differences = item_differences(a, b)
    if not differences.any():
        return 1.0  # no item tells the methods apart
    result = stats.permutation_test(
        (differences,),
        np.mean,
        permutation_type="samples",
        n_resamples=resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's adjusted p-values, in the given order."""
    if not pvalues:
        return []
    return [float(p) for p in multipletests(pvalues, method="holm")[1]]


def minimum_detectable_difference(a: np.ndarray, b: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest mean item difference a two-sided paired test at `alpha` detects with `power`,
    given the items' observed spread of differences: (z(1 - alpha/2) + z(power)) sd / sqrt(n)."""
    differences = item_differences(a, b)
    if differences.size < 2:
        raise UserError("a detectable difference needs at least two items")
    spread = float(np.std(differences, ddof=1))
    return (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * spread / math.sqrt(differences.size)


@dataclass(frozen=True)
class MaskAgreement:
    """Jaccard index of two masks' trainable entries, and per tensor the share of entries on
    which they agree (both trainable or both frozen)."""

    jaccard: float
    agreement: dict[str, float]


def mask_agreement(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> MaskAgreement:
    if sorted(a) != sorted(b):
        raise UserError("the masks cover different tensors: " + ", ".join(sorted(set(a) ^ set(b))))
    both = either = 0
    agreement = {}
    for name in sorted(a):
        if a[name].shape != b[name].shape:
            raise UserError(f"{name}: mask shapes {tuple(a[name].shape)} and {tuple(b[name].shape)} differ")
        both += int((a[name] & b[name]).sum())
        either += int((a[name] | b[name]).sum())
        agreement[name] = float((a[name] == b[name]).float().mean())
    return MaskAgreement(both / either if either else 1.0, agreement)
