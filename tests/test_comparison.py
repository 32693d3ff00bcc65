"""Comparisons over seeds on item tables small enough that every answer is computed by hand."""

import math

import pytest
import torch

from lota.analysis.comparison import (
    Cost,
    compare_pairs,
    every_pair,
    forgetting_items,
    group_methods,
    holds_items,
    item_tables,
    mask_stability,
    merge_items,
    parse_mask_file,
    parse_pair,
    place_pairs,
    result_cost,
    retained_share,
    run_items,
    summarize,
    sweep_pairs,
    whole_cost,
)
from lota.core.errors import UserError
from lota.deltas.masks import save_mask

Z = 2.8015852  # z(0.975) + z(0.8), the minimum detectable difference's factor


def scored(run, seed, verdicts, method=None, **extra):
    """A single-task result of `run` at `seed` with verdicts on items a, b, c, ... in order."""
    items = dict(zip("abcdef", verdicts, strict=False))
    method = method or run.split("_")[0]
    accuracy = sum(verdicts) / len(verdicts)
    return {"run": run, "method": method, "accuracy": accuracy, "items": items, "config": {"seed": seed}, **extra}


# lota has seeds 0 and 1, fft 0 to 2, lora 0 only; lota's seed 0 also scored an item e no other did.
LOTA = [scored("lota_t_s90_seed1", 1, [1, 0, 0, 1]), scored("lota_t_s90", 0, [1, 1, 0, 1, 1])]
FFT = [scored("fft_t", 0, [0, 1, 0, 0]), scored("fft_t_seed1", 1, [0, 0, 1, 1]), scored("fft_t_seed2", 2, [1] * 4)]
LORA = [scored("lora_t", 0, [0, 0, 0, 0])]


def test_results_group_into_methods_by_stem_with_their_seeds_in_order():
    methods = group_methods(LOTA + FFT + LORA)
    assert list(methods) == ["lota_t_s90", "fft_t", "lora_t"]
    assert methods["lota_t_s90"].seeds == (0, 1)
    assert [result["run"] for result in methods["lota_t_s90"].results] == ["lota_t_s90", "lota_t_s90_seed1"]
    assert methods["fft_t"].result(2)["run"] == "fft_t_seed2"


def test_the_seed_is_the_configs_and_two_results_of_one_seed_are_refused():
    # A name without _seed<N> ran with the config's base seed, here 7.
    assert group_methods([scored("fft_t", 7, [1, 0])])["fft_t"].seeds == (7,)
    with pytest.raises(UserError, match="results fft_t and fft_t_seed1 are both seed 1 of fft_t"):
        group_methods([scored("fft_t", 1, [1, 0]), scored("fft_t_seed1", 1, [1, 0])])
    with pytest.raises(UserError, match="result fft_t: its config gives no 'seed'"):
        group_methods([{"run": "fft_t", "items": {}}])


def test_a_figure_over_seeds_skips_the_seeds_without_it():
    methods = group_methods(LOTA + FFT)
    accuracy = summarize(methods["lota_t_s90"], lambda result: result["accuracy"])
    assert accuracy.values == (0.8, 0.5) and accuracy.mean == pytest.approx(0.65)
    assert accuracy.std == pytest.approx(math.sqrt(0.045))  # (0.15² + 0.15²) / 1
    only_seed_two = summarize(methods["fft_t"], lambda result: 1.0 if result["run"] == "fft_t_seed2" else None)
    assert only_seed_two.values == (1.0,) and only_seed_two.std is None
    assert summarize(methods["fft_t"], lambda result: None) is None


def test_a_pair_reads_the_shared_seeds_and_items_averaged_over_seeds():
    methods = group_methods(LOTA + FFT)
    seeds, lota, fft = item_tables(methods["lota_t_s90"], methods["fft_t"], run_items)
    # Seeds 0 and 1 (fft's seed 2 has no lota partner); items a-d (e only in lota's seed 0).
    assert seeds == (0, 1)
    assert lota.tolist() == [[1, 1], [1, 0], [0, 0], [1, 1]]
    assert fft.tolist() == [[0, 0], [1, 0], [0, 1], [0, 1]]


def test_the_pairs_of_a_table_with_mcnemar_per_seed_and_holm_over_the_table():
    methods = group_methods(LOTA + FFT + LORA)
    table = compare_pairs(methods, sweep_pairs(methods), run_items, verdicts=True)
    versus_fft, versus_lora = table.rows
    assert (versus_fft.a, versus_fft.b, versus_fft.seeds, versus_fft.items) == ("lota_t_s90", "fft_t", (0, 1), 4)
    # Item means: lota 1, 0.5, 0, 1; fft 0, 0.5, 0.5, 0.5; differences 1, 0, -0.5, 0.5.
    assert versus_fft.difference.mean == pytest.approx(0.25)
    assert -0.5 <= versus_fft.difference.low <= 0.25 <= versus_fft.difference.high <= 1
    # Sample sd of the differences sqrt(1.25 / 3).
    assert versus_fft.detectable == pytest.approx(Z * math.sqrt(1.25 / 3) / 2, abs=1e-6)
    # Seed 0: lota right and fft wrong on a and d, never the reverse: 2 * (1/2)² = 0.5.
    # Seed 1: one discordant item each way (a; c): p = 1.
    assert versus_fft.mcnemar == pytest.approx((0.5, 1.0))
    # Against lora, seed 0 only: lota right on a, b, d, lora on none: 2 * (1/2)³ = 0.25; differences 1, 1, 0, 1.
    assert versus_lora.seeds == (0,) and versus_lora.difference.mean == pytest.approx(0.75)
    assert versus_lora.mcnemar == pytest.approx((0.25,))
    assert versus_lora.detectable == pytest.approx(Z * 0.5 / 2, abs=1e-6)
    # Holm over the table's three p-values 0.5, 1, 0.25: 0.25 * 3 = 0.75, 0.5 * 2 = 1, then 1.
    assert versus_fft.holm == pytest.approx((1.0, 1.0)) and versus_lora.holm == pytest.approx((0.75,))
    assert table.skipped == []


def test_pairs_without_a_shared_seed_or_two_shared_items_are_left_out_with_a_note():
    methods = group_methods([*FFT, scored("lora_t_seed5", 5, [1, 0]), scored("lota_t_s90", 0, [1])])
    table = compare_pairs(methods, [("lora_t", "fft_t"), ("lota_t_s90", "fft_t")], run_items, verdicts=True)
    assert table.rows == []
    assert table.skipped == [
        "lora_t vs fft_t: no seed in common",
        "lota_t_s90 vs fft_t: fewer than two items in common",
    ]


def test_the_standard_pairs_of_a_task():
    runs = ["base_t", "fft_t", "lora_t", "lora_t_r8", "lota_t_s90", "lota_t_s90_random", "rosa_t_s90"]
    methods = group_methods(scored(run, 0, [1, 0]) for run in runs)
    assert sweep_pairs(methods) == [
        ("lota_t_s90", "fft_t"),
        ("lota_t_s90", "lora_t"),
        ("lota_t_s90_random", "fft_t"),
        ("lota_t_s90_random", "lora_t"),
        ("rosa_t_s90", "lora_t"),
    ]
    assert every_pair(group_methods(scored(run, 0, [1, 0]) for run in runs[:3])) == [
        ("fft_t", "base_t"),
        ("lora_t", "base_t"),
        ("lora_t", "fft_t"),
    ]


def test_an_extra_pair_is_two_stems_and_goes_to_the_group_that_holds_both():
    assert parse_pair("lota_t_s90:lora_t_r8") == ("lota_t_s90", "lora_t_r8")
    for text in ("lota_t_s90", "lota_t_s90:", ":fft_t", "a:b:c", "fft_t:fft_t", "lota_t_s90_seed1:fft_t"):
        with pytest.raises(UserError, match=f"pair '{text}' is not A:B of two different name stems"):
            parse_pair(text)
    groups = {("sweep", "t"): ["fft_t", "lota_t_s90"], ("merge", ("t", "u")): ["ta_t+u", "ties_t+u"]}
    placed = place_pairs([("ties_t+u", "ta_t+u"), ("lota_t_s90", "fft_t")], groups)
    assert placed == {("merge", ("t", "u")): [("ties_t+u", "ta_t+u")], ("sweep", "t"): [("lota_t_s90", "fft_t")]}
    with pytest.raises(UserError, match="pair lota_t_s90:ta_t\\+u: no task, task sequence or merged task set"):
        place_pairs([("lota_t_s90", "ta_t+u")], groups)


def sequence(run, seed, own, last):
    """A sequence of tasks t then u; `own` and `last` are t's verdicts on items a-d after stages 1 and 2."""

    def stage(verdicts):
        return {"accuracy": {"t": {"items": dict(zip("abcd", verdicts, strict=True))}, "u": {"items": {"a": 1}}}}

    return {"run": run, "tasks": ["t", "u"], "stages": [stage([0] * 4), stage(own), stage(last)]} | {
        "config": {"seed": seed},
        "training_jobs": {"1:train": {"wall_s": 10.0 * (seed + 1), "max_rss_mb": 100.0}, "2:train": {"wall_s": 5.0}},
    }


def test_forgetting_per_item_is_the_verdict_after_its_own_stage_less_after_the_last():
    result = sequence("lotto_t-u_s90", 0, own=[1, 1, 0, 1], last=[0, 1, 1, 1])
    assert forgetting_items("t")(result) == {"a": 1, "b": 0, "c": -1, "d": 0}


def test_the_paired_forgetting_difference_averages_each_item_over_seeds():
    results = [
        sequence("lotto_t-u_s90", 0, own=[1, 1, 0, 1], last=[1, 1, 0, 1]),  # forgetting 0, 0, 0, 0
        sequence("lotto_t-u_s90_seed1", 1, own=[1, 1, 1, 0], last=[1, 0, 1, 0]),  # 0, 1, 0, 0
        sequence("fft_t-u", 0, own=[1, 1, 1, 1], last=[0, 1, 0, 1]),  # 1, 0, 1, 0
        sequence("fft_t-u_seed1", 1, own=[1, 1, 0, 0], last=[0, 0, 0, 0]),  # 1, 1, 0, 0
    ]
    table = compare_pairs(group_methods(results), [("lotto_t-u_s90", "fft_t-u")], forgetting_items("t"), False)
    (row,) = table.rows
    # Item means: lotto 0, 0.5, 0, 0; fft 1, 0.5, 0.5, 0; differences -1, 0, -0.5, 0, mean -0.375; squared
    # deviations 0.390625, 0.140625, 0.015625, 0.140625 sum to 0.6875.
    assert row.difference.mean == pytest.approx(-0.375)
    assert row.detectable == pytest.approx(Z * math.sqrt(0.6875 / 3) / 2, abs=1e-6)
    assert row.mcnemar == () and row.holm == ()  # forgetting is no 0/1 verdict


def test_a_merges_items_are_every_tasks_pooled():
    merge = {"tasks": ["t", "u"], "accuracy": {"t": {"items": {"a": 1, "b": 0}}, "u": {"items": {"a": 0}}}}
    assert merge_items(merge) == {"t/a": 1, "t/b": 0, "u/a": 0}


def test_results_hold_items_when_every_part_does():
    assert holds_items(scored("fft_t", 0, [1, 0], stages={"generate": {"wall_s": 1.0}}))
    assert not holds_items({"run": "fft_t", "accuracy": 0.5, "stages": {}})
    assert holds_items(sequence("fft_t-u", 0, [1] * 4, [1] * 4))
    older = sequence("fft_t-u", 0, [1] * 4, [1] * 4)
    del older["stages"][2]["accuracy"]["u"]["items"]
    assert not holds_items(older)
    assert holds_items({"accuracy": {"t": {"items": {}}}, "stages": {}}) and not holds_items({"accuracy": {"t": {}}})


def test_the_whole_cost_sums_a_results_jobs_and_averages_over_seeds():
    jobs = {
        "base_model": {"wall_s": 10.0, "max_rss_mb": 500.0},
        "train_lota": {"wall_s": 100.0, "max_rss_mb": 2000.0},
        "generate": {"wall_s": 30.0, "max_rss_mb": None},
    }
    assert result_cost(jobs) == Cost(140.0, 2000.0)
    assert result_cost({}) == Cost(0, None)
    seed_one = {
        "base_model": {"wall_s": 20.0, "max_rss_mb": 1000.0},
        "train_lota": {"wall_s": 200.0, "max_rss_mb": 3000.0},
    }
    unmeasured = {"train_lota": {"wall_s": 60.0, "max_rss_mb": None}}
    runs = [scored("lota_t_s90", 0, [1], stages=jobs), scored("lota_t_s90_seed1", 1, [1], stages=seed_one)]
    # (140 + 220) / 2 s; peaks 2000 and 3000.
    assert whole_cost(group_methods(runs)["lota_t_s90"]) == Cost(180.0, 2500.0)
    runs.append(scored("lota_t_s90_seed2", 2, [1], stages=unmeasured))
    assert whole_cost(group_methods(runs)["lota_t_s90"]) == Cost(140.0, 2500.0)  # a seed without a peak adds none
    sequences = group_methods(
        [sequence("fft_t-u", 0, [1] * 4, [1] * 4), sequence("fft_t-u_seed1", 1, [1] * 4, [1] * 4)]
    )
    assert whole_cost(sequences["fft_t-u"], "training_jobs") == Cost(20.0, 100.0)  # (15 + 25) / 2


def test_the_share_a_merge_keeps_leaves_out_tasks_without_a_single_task_accuracy():
    assert retained_share({"retained": {"t": 0.5, "u": None, "v": 1.0}}) == 0.75
    assert retained_share({"retained": {"t": None}}) is None and retained_share({}) is None


def test_a_mask_file_name_gives_its_task_seed_sparsity_and_strategy(tmp_path):
    plain = parse_mask_file(tmp_path / "gsm8k_s90.safetensors")
    assert (plain.task, plain.seed, plain.percent, plain.strategy) == ("gsm8k", None, "90", "task_vector")
    seeded = parse_mask_file(tmp_path / "arc_easy_seed2_s99.9_random.safetensors")
    assert (seeded.task, seeded.seed, seeded.percent, seeded.strategy) == ("arc_easy", 2, "99.9", "random")
    for name in ("gsm8k.safetensors", "gsm8k_s90.pt", "gsm8k_s90_bogus.safetensors", "gsm8k_s90_seed1.safetensors"):
        with pytest.raises(UserError, match=f"mask file .*{name}: its name is not <task>"):
            parse_mask_file(tmp_path / name)


def write_mask(folder, name, w, v):
    masks = {"w": torch.tensor([w], dtype=torch.bool), "v": torch.tensor(v, dtype=torch.bool)}
    save_mask(folder / name, masks, {"sparsity": 0.5})
    return folder / name


def test_mask_stability_compares_every_two_seeds_of_a_variant(tmp_path):
    paths = [
        write_mask(tmp_path, "t_seed2_s50.safetensors", [1, 1, 0, 0], [0, 1]),
        write_mask(tmp_path, "t_s50.safetensors", [1, 1, 0, 0], [1, 0]),
        write_mask(tmp_path, "t_seed1_s50.safetensors", [1, 0, 1, 0], [1, 0]),
        write_mask(tmp_path, "t_s50_random.safetensors", [1, 0, 1, 0], [1, 0]),  # one seed: nothing to compare
    ]
    rows = mask_stability(paths)
    assert [(row.task, row.percent, row.strategy, row.seeds) for row in rows] == [
        ("t", "50", "task_vector", (None, 1)),
        ("t", "50", "task_vector", (None, 2)),
        ("t", "50", "task_vector", (1, 2)),
    ]
    # base-1: trainable in both w0, v0 of w0, w1, w2, v0; agree on w 2 of 4, on v 2 of 2.
    # base-2: both w0, w1 of w0, w1, v0, v1; agree on all of w, none of v.
    # 1-2: both w0 of w0, w1, w2, v0, v1; agree on w0, w3, none of v.
    assert [row.jaccard for row in rows] == [0.5, 0.5, 0.2]
    assert [row.agreement for row in rows] == [0.75, 0.5, 0.25]
    with pytest.raises(UserError, match="mask files .*t_s50.safetensors and .*t_s50.safetensors are the same seed"):
        mask_stability(paths[1:2] * 2)
