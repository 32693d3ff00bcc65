import json
import logging

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lota.core.cli import run_main
from lota.core.errors import UserError
from lota.core.io import TASK_VECTOR_FORMAT, WEIGHTS_FORMAT, TensorReader, checkpoint_files
from lota.deltas.masks import (
    load_mask,
    pack_bits,
    save_mask,
    select_mask,
    top_k_mask,
    trainable_count,
    unpack_bits,
)
from lota.extract_mask import ExtractMaskArgs, run


def test_top_k_mask_keeps_largest_and_breaks_ties_by_lowest_index():
    scores = torch.tensor([1.0, 2.0, 2.0, 2.0, 3.0])
    assert top_k_mask(scores, 3).tolist() == [False, True, True, False, True]
    assert top_k_mask(scores, 1).tolist() == [False, False, False, False, True]
    assert top_k_mask(scores, 0).tolist() == [False] * 5
    assert top_k_mask(scores, 5).tolist() == [True] * 5


def test_top_k_mask_all_tied_takes_the_first_k():
    assert top_k_mask(torch.zeros(10), 4).tolist() == [True] * 4 + [False] * 6


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.95, 0.99, 0.999])
def test_global_mask_count_is_exact(sparsity):
    generator = torch.Generator().manual_seed(0)
    deltas = {
        "a.q_proj.weight": torch.randn(7, 13, generator=generator),
        "b.up_proj.weight": torch.randn(31, 5, generator=generator).round(decimals=1),  # many ties
        "c.down_proj.weight": torch.zeros(3, 3),
    }
    masks = select_mask(deltas, sparsity, "global")
    total = sum(d.numel() for d in deltas.values())
    assert (
        sum(int(m.sum()) for m in masks.values()) == trainable_count(sparsity, total) == round((1 - sparsity) * total)
    )
    assert all(masks[name].shape == deltas[name].shape for name in deltas)


def test_global_mask_is_one_threshold_across_tensors():
    deltas = {"x.q_proj.weight": torch.tensor([[5.0, 1.0]]), "y.k_proj.weight": torch.tensor([[-4.0, 0.5]])}
    masks = select_mask(deltas, 0.5, "global")
    assert masks["x.q_proj.weight"].tolist() == [[True, False]]
    assert masks["y.k_proj.weight"].tolist() == [[True, False]]  # |-4| ranks by magnitude


def test_global_ties_go_to_the_first_tensor_by_name():
    deltas = {"z.q_proj.weight": torch.ones(2, 2), "a.q_proj.weight": torch.ones(2, 2)}
    masks = select_mask(deltas, 0.5, "global")
    assert masks["a.q_proj.weight"].all() and not masks["z.q_proj.weight"].any()


def test_per_tensor_mask_counts_are_exact_per_tensor():
    deltas = {"a.q_proj.weight": torch.arange(10.0).view(2, 5), "b.v_proj.weight": -torch.arange(20.0).view(4, 5)}
    masks = select_mask(deltas, 0.7, "per_tensor")
    assert int(masks["a.q_proj.weight"].sum()) == 3
    assert int(masks["b.v_proj.weight"].sum()) == 6
    assert masks["a.q_proj.weight"].flatten().tolist() == [False] * 7 + [True] * 3
    assert masks["b.v_proj.weight"].flatten().tolist() == [False] * 14 + [True] * 6


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 64, 1001])
def test_pack_bits_matches_numpy_and_round_trips(numel):
    mask = torch.rand(numel, generator=torch.Generator().manual_seed(numel)) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8
    assert packed.numpy().tolist() == np.packbits(mask.numpy()).tolist()
    assert torch.equal(unpack_bits(packed, (numel,)), mask)


def write_task_vector(path, tensors):
    save_file(tensors, str(path), {"format": TASK_VECTOR_FORMAT})
    return path


def test_run_writes_packed_mask_with_metadata(tmp_path):
    deltas = {
        "m.layers.0.self_attn.q_proj.weight": torch.randn(8, 4),
        "m.layers.0.mlp.up_proj.weight": torch.randn(6, 4),
        "m.embed_tokens.weight": torch.randn(10, 4),
    }
    vector = write_task_vector(tmp_path / "tv.safetensors", deltas)
    out = tmp_path / "mask.safetensors"
    run(ExtractMaskArgs(task_vector=vector, out=out, sparsity=0.75))
    masks = load_mask(out, {name: t.shape for name, t in deltas.items()})
    assert set(masks) == {"m.layers.0.self_attn.q_proj.weight", "m.layers.0.mlp.up_proj.weight"}
    assert sum(int(m.sum()) for m in masks.values()) == round(0.25 * 56)
    from safetensors import safe_open

    with safe_open(str(out), "pt") as handle:
        metadata = handle.metadata()
        assert handle.get_tensor("m.layers.0.self_attn.q_proj.weight").dtype == torch.uint8
    assert json.loads(metadata["sparsity"]) == 0.75
    assert json.loads(metadata["granularity"]) == "global"
    assert metadata["trainable"] == "14" and metadata["total"] == "56"


def test_load_mask_rejects_other_models(tmp_path):
    vector = write_task_vector(tmp_path / "tv.safetensors", {"m.layers.0.q_proj.weight": torch.randn(4, 4)})
    out = tmp_path / "mask.safetensors"
    run(ExtractMaskArgs(task_vector=vector, out=out, sparsity=0.5))
    with pytest.raises(UserError, match="m.layers.0.q_proj.weight has shape \\(4, 4\\), the model's is \\(4, 5\\)"):
        load_mask(out, {"m.layers.0.q_proj.weight": torch.Size([4, 5])})
    with pytest.raises(UserError, match="covers m.layers.0.q_proj.weight, which the model does not have"):
        load_mask(out, {"other.weight": torch.Size([4, 4])})


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5])
def test_run_rejects_sparsity_out_of_range(tmp_path, sparsity):
    vector = write_task_vector(tmp_path / "tv.safetensors", {"m.layers.0.q_proj.weight": torch.randn(4, 4)})
    with pytest.raises(UserError, match=r"sparsity must be in \[0.0, 1.0\)"):
        run(ExtractMaskArgs(task_vector=vector, out=tmp_path / "mask.safetensors", sparsity=sparsity))
    assert not (tmp_path / "mask.safetensors").exists()


def test_run_refuses_weights_in_place_of_a_task_vector(tmp_path):
    save_file(
        {"m.layers.0.q_proj.weight": torch.randn(4, 4)}, str(tmp_path / "w.safetensors"), {"format": WEIGHTS_FORMAT}
    )
    with pytest.raises(UserError, match="is not a task vector"):
        run(ExtractMaskArgs(task_vector=tmp_path / "w.safetensors", out=tmp_path / "mask.safetensors", sparsity=0.5))
    assert not (tmp_path / "mask.safetensors").exists()


@pytest.mark.parametrize("granularity", ["global", "per_tensor"])
def test_lotto_masks_take_the_largest_free_entries_and_stay_disjoint(granularity):
    first = {"a.q_proj.weight": torch.tensor([[9.0, 1.0], [8.0, 2.0]]), "b.up_proj.weight": torch.tensor([7.0, 3.0])}
    earlier = select_mask(first, 0.5, granularity)
    # The next task's delta is largest exactly where the earlier mask trains.
    second = {name: delta.clone() for name, delta in first.items()}
    later = select_mask(second, 0.5, granularity, excluded=earlier)
    for name in first:
        assert not (earlier[name] & later[name]).any()
    assert sum(int(m.sum()) for m in later.values()) == sum(int(m.sum()) for m in earlier.values()) == 3
    if granularity == "global":
        assert earlier["a.q_proj.weight"].tolist() == [[True, False], [True, False]]
        assert later["a.q_proj.weight"].tolist() == [[False, True], [False, True]]
        assert later["b.up_proj.weight"].tolist() == [False, True]
        with pytest.raises(UserError, match="needs 3 trainable entries but earlier masks leave only 0 free"):
            select_mask(second, 0.5, granularity, excluded={n: earlier[n] | later[n] for n in first})


def test_exclude_files_are_unioned_and_checked(tmp_path):
    deltas = {"m.layers.0.q_proj.weight": torch.arange(8.0).view(2, 4)}
    path = tmp_path / "tv.safetensors"
    save_file(deltas, str(path), metadata={"format": TASK_VECTOR_FORMAT})
    masks = []
    for number in range(2):
        out = tmp_path / f"mask{number}.safetensors"
        run(ExtractMaskArgs(task_vector=path, out=out, sparsity=0.75, exclude=masks.copy()))
        masks.append(out)
    first, second = (load_mask(mask)["m.layers.0.q_proj.weight"].flatten().tolist() for mask in masks)
    assert first == [False] * 6 + [True] * 2 and second == [False] * 4 + [True] * 2 + [False] * 2
    wrong = tmp_path / "wrong.safetensors"
    save_mask(wrong, {"m.layers.0.q_proj.weight": torch.ones(4, 2, dtype=torch.bool)}, {})
    with pytest.raises(
        UserError,
        match=r"wrong.safetensors: m.layers.0.q_proj.weight has shape \(4, 2\), the task vector in scope's is \(2, 4\)",
    ):
        run(ExtractMaskArgs(task_vector=path, out=tmp_path / "m.safetensors", sparsity=0.75, exclude=[wrong]))
    assert not (tmp_path / "m.safetensors").exists()


def test_other_strategies_rank_by_base_magnitude_or_seeded_random_scores(tmp_path, tiny_model):
    with TensorReader(checkpoint_files(tiny_model)) as reader:
        weights = {name: reader.get(name) for name in reader.names() if name.endswith("proj.weight")}
    masks = {}
    for strategy, seed in (("base_magnitude", 0), ("random", 0), ("random", 0), ("random", 1)):
        out = tmp_path / f"{strategy}-{seed}-{len(masks)}.safetensors"
        run(ExtractMaskArgs(out=out, sparsity=0.75, strategy=strategy, base=tiny_model, seed=seed))
        masks[out.stem] = load_mask(out, {name: weight.shape for name, weight in weights.items()})
        with TensorReader([out]) as reader:
            assert json.loads(reader.metadata["strategy"]) == strategy
        trainable = sum(int(mask.sum()) for mask in masks[out.stem].values())
        assert trainable == round(0.25 * sum(weight.numel() for weight in weights.values()))

    # base_magnitude: no frozen entry has a larger |w| than a trainable one.
    by_magnitude = masks["base_magnitude-0-0"]
    trained = torch.cat([weights[name].abs()[by_magnitude[name]] for name in weights])
    frozen = torch.cat([weights[name].abs()[~by_magnitude[name]] for name in weights])
    assert trained.min() >= frozen.max()
    # random: the seed fixes the mask, another seed draws another, and every tensor gets its share.
    same, other = masks["random-0-2"], masks["random-1-3"]
    assert all(torch.equal(masks["random-0-1"][name], same[name]) for name in weights)
    assert not all(torch.equal(same[name], other[name]) for name in weights)
    assert not all(torch.equal(same[name], by_magnitude[name]) for name in weights)
    assert all(abs(float(mask.float().mean()) - 0.25) < 0.15 for mask in same.values())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"strategy": "task_vector"}, "strategy task_vector needs --task-vector"),
        ({"strategy": "random"}, r"strategy random needs --base \(the base model directory\)"),
    ],
)
def test_a_strategy_without_its_source_is_named(tmp_path, settings, message):
    with pytest.raises(UserError, match=message):
        run(ExtractMaskArgs(out=tmp_path / "mask.safetensors", sparsity=0.5, **settings))
    assert not (tmp_path / "mask.safetensors").exists()


# --- the official code's threshold rule (rule "official") --------------------------------
# k = int((1 - s) * n); every free entry with |delta| >= the k-th largest free |delta| trains.


def one_tensor(*values: float) -> dict[str, torch.Tensor]:
    return {"m.layers.0.q_proj.weight": torch.tensor(values)}


def trained(masks: dict[str, torch.Tensor]) -> list[bool]:
    return masks["m.layers.0.q_proj.weight"].tolist()


def test_official_rule_trains_every_entry_tied_at_the_threshold():
    deltas = one_tensor(3.0, 2.0, -2.0, 2.0, 1.0, 0.0, 0.0, 0.0)
    # k = int(0.25 * 8) = 2: the threshold is |2|, and all three entries tied at it train.
    assert trained(select_mask(deltas, 0.75, "global", rule="official")) == [True] * 4 + [False] * 4
    # The exact rule on the same input: exactly 2, the tie going to the lowest index.
    assert trained(select_mask(deltas, 0.75, "global")) == [True] * 2 + [False] * 6


def test_official_rule_at_a_zero_threshold_trains_every_zero():
    deltas = one_tensor(3.0, -2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    # k = 4, and the 4th largest |delta| is 0: every entry is at or above it.
    assert trained(select_mask(deltas, 0.5, "global", rule="official")) == [True] * 8
    assert trained(select_mask(deltas, 0.5, "global")) == [True] * 4 + [False] * 4


def test_official_rule_floors_the_count_as_int_of_the_float_product():
    deltas = one_tensor(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)
    # 0.5 * 7 = 3.5: int() keeps 3, round() 4.
    assert trainable_count(0.5, 7, "official") == 3 and trainable_count(0.5, 7) == 4
    assert trained(select_mask(deltas, 0.5, "global", rule="official")) == [False] * 4 + [True] * 3
    assert trained(select_mask(deltas, 0.5, "global")) == [False] * 3 + [True] * 4
    # (1 - 0.9) * 10 is 0.9999999999999998 in floats, so the official count is 0: no entry trains.
    assert trainable_count(0.9, 10, "official") == 0 and trainable_count(0.9, 10) == 1
    assert not any(trained(select_mask(one_tensor(*range(10)), 0.9, "global", rule="official")))


def test_official_rule_per_tensor_sets_one_threshold_per_tensor():
    deltas = {
        "a.q_proj.weight": torch.tensor([[4.0, 1.0], [-1.0, 0.0]]),
        "b.v_proj.weight": torch.tensor([9.0] * 4 + [0.0] * 2),
    }
    per_tensor = select_mask(deltas, 0.5, "per_tensor", rule="official")
    # a: k = 2, threshold 1 (tied twice); b: k = 3, threshold 9 (tied four times).
    assert per_tensor["a.q_proj.weight"].tolist() == [[True, True], [True, False]]
    assert per_tensor["b.v_proj.weight"].tolist() == [True] * 4 + [False] * 2
    # Globally k = 5 of 10, and the 5th largest is 4.
    together = select_mask(deltas, 0.5, "global", rule="official")
    assert together["a.q_proj.weight"].tolist() == [[True, False], [False, False]]
    assert together["b.v_proj.weight"].tolist() == [True] * 4 + [False] * 2


def test_official_rule_never_takes_excluded_entries_and_thresholds_the_free_ones():
    deltas = one_tensor(5.0, 4.0, 3.0, 3.0, 3.0, 1.0, 0.0, 0.0)
    earlier = {"m.layers.0.q_proj.weight": torch.tensor([True] + [False] * 7)}
    # k = 2 of all 8; the 2nd largest free |delta| is 3 (with the excluded 5 it would be 4).
    masks = select_mask(deltas, 0.75, "global", excluded=earlier, rule="official")
    assert trained(masks) == [False] + [True] * 4 + [False] * 3
    # At a zero threshold the free zeros train, the excluded zero does not.
    zeros = one_tensor(2.0, 0.0, 0.0, 0.0)
    earlier = {"m.layers.0.q_proj.weight": torch.tensor([False, True, False, False])}
    assert trained(select_mask(zeros, 0.5, "global", excluded=earlier, rule="official")) == [True, False, True, True]
    earlier = {"m.layers.0.q_proj.weight": torch.tensor([True, True, True, False])}
    with pytest.raises(UserError, match="needs 3 trainable entries but earlier masks leave only 1 free"):
        select_mask(zeros, 0.25, "global", excluded=earlier, rule="official")


def test_an_unknown_rule_is_named_with_the_choices():
    with pytest.raises(UserError, match="mask rule must be one of exact, official, got 'closest'"):
        select_mask(one_tensor(1.0, 2.0), 0.5, "global", rule="closest")


def test_the_command_line_records_the_rule_and_logs_the_ties(tmp_path, caplog):
    vector = write_task_vector(tmp_path / "tv.safetensors", one_tensor(3.0, 2.0, -2.0, 2.0, 1.0, 0.0, 0.0, 0.0))
    argv = ["--task-vector", str(vector), "--sparsity", "0.75", "--scope", "q_proj"]  # a vector: auto skips it
    with caplog.at_level(logging.INFO, logger="lota.extract_mask"):
        run_main(ExtractMaskArgs, run, [*argv, "--out", str(tmp_path / "official.safetensors"), "--rule", "official"])
    assert "4 of 8 entries trainable (0.5000, 2 of them beyond int((1 - s) * N): ties" in caplog.text
    run_main(ExtractMaskArgs, run, [*argv, "--out", str(tmp_path / "exact.safetensors")])
    for rule, count in (("official", "4"), ("exact", "2")):
        with TensorReader([tmp_path / f"{rule}.safetensors"]) as reader:
            assert json.loads(reader.metadata["rule"]) == rule and reader.metadata["trainable"] == count
