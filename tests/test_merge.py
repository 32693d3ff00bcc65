"""Merging: exact checks of each step on small tensors, the streaming merge against in-memory
references (task arithmetic, the original TIES code's global trim, LoTA's sparse sum against each
run's export), and against mergekit where it is installed."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from lota.core.errors import UserError
from lota.core.io import LORA_ADAPTER_FORMAT, WEIGHTS_FORMAT
from lota.deltas.merging import (
    combine,
    dare_drop,
    elect_positive,
    global_threshold,
    kth_smallest_magnitude,
    tensor_seed,
    trim_below,
    trim_per_tensor,
)
from lota.deltas.sparse import save_sparse_delta
from lota.export import apply_weights
from lota.merge import MergeArgs, merge


def test_trim_per_tensor_keeps_int_density_n_largest_magnitudes_and_at_least_one():
    delta = torch.tensor([[0.5, -3.0, 1.0], [-2.0, 0.1, 2.5]])
    assert torch.equal(trim_per_tensor(delta, 0.5), torch.tensor([[0.0, -3.0, 0.0], [-2.0, 0.0, 2.5]]))
    assert torch.equal(trim_per_tensor(delta, 0.1), torch.tensor([[0.0, -3.0, 0.0], [0.0, 0.0, 0.0]]))
    assert torch.equal(trim_per_tensor(delta, 1.0), delta)
    # Equal magnitudes go to the lowest index.
    assert torch.equal(trim_per_tensor(torch.tensor([1.0, -1.0, 1.0, 0.5]), 0.5), torch.tensor([1.0, -1.0, 0.0, 0.0]))


def test_kth_smallest_magnitude_is_exact_across_tensors_with_ties_and_zeros():
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(37, 5, generator=generator), torch.zeros(4), torch.tensor([2.5, -2.5, 1e-30, -7.0])]
    tensors.append(torch.randn(300, generator=generator).mul(1e-3).round(decimals=5))  # many exact ties
    flat = torch.cat([t.flatten() for t in tensors]).abs()
    for k in (1, 2, 5, 100, 257, flat.numel() - 1, flat.numel()):
        assert kth_smallest_magnitude(lambda: iter(tensors), k) == flat.kthvalue(k).values.item()
    with pytest.raises(ValueError):
        kth_smallest_magnitude(lambda: iter(tensors), flat.numel() + 1)


def original_ties_trim(flat: torch.Tensor, density: float) -> torch.Tensor:
    """The original TIES code's topk_values_mask on one flattened task vector."""
    n = flat.numel()
    kth = flat.abs().kthvalue(n - int(n * density)).values
    return flat * (flat.abs() >= kth)


def test_global_threshold_trims_as_the_original_ties_code():
    generator = torch.Generator().manual_seed(1)
    tensors = [torch.randn(20, 7, generator=generator), torch.randn(33, generator=generator)]
    flat = torch.cat([t.flatten() for t in tensors])
    for density in (0.05, 0.2, 0.5, 0.99):
        threshold = global_threshold(lambda: iter(tensors), flat.numel(), density)
        trimmed = torch.cat([trim_below(t, threshold).flatten() for t in tensors])
        assert torch.equal(trimmed, original_ties_trim(flat, density))
        assert int((trimmed != 0).sum()) == int(density * flat.numel()) + 1
    assert global_threshold(lambda: iter(tensors), flat.numel(), 1.0) == 0.0


def test_signs_are_elected_by_mass_and_only_agreeing_entries_are_averaged():
    deltas = torch.tensor([[1.0, -2.0, 3.0, 0.0, 1.0], [-3.0, 1.0, 2.0, 0.0, -1.0]])
    assert elect_positive(deltas).tolist() == [False, False, True, True, True]  # a zero sum elects +
    mixed, conflicts = combine(deltas.clone(), torch.tensor([1.0, 1.0]), 1.0, elect=True, mean=True)
    assert torch.equal(mixed, torch.tensor([-3.0, -2.0, 2.5, 0.0, 1.0]))
    assert conflicts == 3  # columns 0, 1 and 4 each had an entry against the elected sign
    summed, _ = combine(deltas.clone(), torch.tensor([1.0, 1.0]), 0.5, elect=True)
    assert torch.equal(summed, torch.tensor([-1.5, -1.0, 2.5, 0.0, 0.5]))
    # Weights scale the deltas before the election and weigh the mean.
    weighted, _ = combine(deltas.clone(), torch.tensor([1.0, 3.0]), 1.0, elect=True, mean=True)
    assert torch.equal(weighted, torch.tensor([-3.0, 1.0, 9.0 / 4.0, 0.0, -1.0]))


def test_task_arithmetic_is_the_scaled_weighted_sum():
    deltas = torch.tensor([[1.0, -2.0], [4.0, 0.5]])
    mixed, conflicts = combine(deltas, torch.tensor([1.0, 0.5]), 0.5, elect=False)
    assert torch.equal(mixed, torch.tensor([1.5, -0.875])) and conflicts == 0


def test_dare_keeps_entries_with_probability_density_rescaled_and_is_seeded():
    delta = torch.randn(200, 50, generator=torch.Generator().manual_seed(0))
    dropped = dare_drop(delta, 0.25, torch.Generator().manual_seed(5))
    kept = dropped != 0
    assert torch.equal(dropped[kept], delta[kept] / 0.25)
    assert abs(kept.float().mean().item() - 0.25) < 0.02
    assert torch.equal(dropped, dare_drop(delta, 0.25, torch.Generator().manual_seed(5)))
    assert not torch.equal(dropped, dare_drop(delta, 0.25, torch.Generator().manual_seed(6)))
    assert tensor_seed(0, 1, "a.weight") != tensor_seed(0, 0, "a.weight") != tensor_seed(1, 0, "a.weight")


# --- the streaming merge on checkpoints --------------------------------------------------

BASE = {
    "layers.0.q_proj.weight": torch.randn(6, 4, generator=torch.Generator().manual_seed(10)),
    "layers.0.norm.weight": torch.ones(4),
    "embed.weight": torch.randn(9, 4, generator=torch.Generator().manual_seed(11)),
}


@pytest.fixture
def base_dir(tmp_path):
    folder = tmp_path / "base"
    folder.mkdir()
    save_file(BASE, str(folder / "model.safetensors"), {"format": "pt"})
    (folder / "config.json").write_text("{}")
    return folder


def dense_run(path, seed, names=tuple(BASE)):
    generator = torch.Generator().manual_seed(seed)
    tuned = {name: BASE[name] + 0.1 * torch.randn(BASE[name].shape, generator=generator) for name in names}
    save_file(tuned, str(path), {"format": WEIGHTS_FORMAT})
    return path


def sparse_run(path, entries, seed):
    """A sparse delta changing the given flat indices of each named tensor."""
    generator = torch.Generator().manual_seed(seed)
    delta = {name: (torch.tensor(indices), torch.randn(len(indices), generator=generator)) for name, indices in entries}
    save_sparse_delta(path, delta, {name: BASE[name].shape for name in delta})
    return path


def merged(out):
    return load_file(str(out / "model.safetensors"))


def test_task_arithmetic_streams_base_plus_scaled_sum_into_an_hf_directory(tmp_path, base_dir):
    runs = [dense_run(tmp_path / "a.safetensors", 1), dense_run(tmp_path / "b.safetensors", 2, ["embed.weight"])]
    args = MergeArgs(base=base_dir, runs=runs, out=tmp_path / "out", method="task_arithmetic", scale=0.7)
    args.weights = [1.0, 0.5]
    summary = merge(args)
    a, b, out = load_file(str(runs[0])), load_file(str(runs[1])), merged(tmp_path / "out")
    assert set(out) == set(BASE) and (tmp_path / "out" / "config.json").is_file()
    for name, original in BASE.items():
        expected = original + 0.7 * ((a[name] - original) + 0.5 * (b[name] - original if name in b else 0))
        torch.testing.assert_close(out[name], expected, rtol=0, atol=1e-6)
    recorded = json.loads((tmp_path / "out" / "merge.json").read_text())
    assert recorded["settings"]["method"] == "task_arithmetic" and recorded["settings"]["weights"] == [1.0, 0.5]
    assert summary["tensors"] == 3 and summary["peak_rss_mb"] > 0 and summary["sign_conflicts"] == 0


def test_global_ties_equals_the_original_code_on_the_flattened_model(tmp_path, base_dir):
    runs = [dense_run(tmp_path / f"{seed}.safetensors", seed) for seed in (1, 2, 3)]
    args = MergeArgs(base=base_dir, runs=runs, out=tmp_path / "out", method="ties", density=0.3, granularity="global")
    args.scale = 0.9
    summary = merge(args)
    names = sorted(BASE)
    flat_base = torch.cat([BASE[name].flatten() for name in names])
    deltas = []
    for path in runs:
        tuned = load_file(str(path))
        deltas.append(original_ties_trim(torch.cat([tuned[n].flatten() for n in names]) - flat_base, 0.3))
    stacked = torch.stack(deltas)
    signs = torch.sign(stacked.sum(dim=0))
    selected = torch.where(signs > 0, stacked > 0, stacked < 0) * stacked
    mean = selected.sum(dim=0) / torch.clamp((selected != 0).sum(dim=0).float(), min=1)
    expected, out = flat_base + 0.9 * mean, merged(tmp_path / "out")
    torch.testing.assert_close(torch.cat([out[n].flatten() for n in names]), expected, rtol=0, atol=1e-6)
    assert len(summary["thresholds"]) == 3 and summary["sign_conflicts"] > 0


def test_sparse_sum_of_disjoint_deltas_equals_each_runs_export_bit_for_bit(tmp_path, base_dir):
    q, embed = "layers.0.q_proj.weight", "embed.weight"
    first = sparse_run(tmp_path / "a.safetensors", [(q, [0, 5, 7]), (embed, [3])], 1)
    second = sparse_run(tmp_path / "b.safetensors", [(q, [1, 6, 23])], 2)
    merge(MergeArgs(base=base_dir, runs=[first, second], out=tmp_path / "out", method="sparse_sum"))
    out = merged(tmp_path / "out")
    touched = {first: {q: [0, 5, 7], embed: [3]}, second: {q: [1, 6, 23]}}
    for run, entries in touched.items():
        exported = export_state(base_dir, run, tmp_path / run.stem)
        for name, indices in entries.items():
            assert torch.equal(out[name].view(-1)[indices], exported[name].view(-1)[indices])
    untouched = torch.ones(24, dtype=torch.bool)
    untouched[[0, 1, 5, 6, 7, 23]] = False
    assert torch.equal(out[q].view(-1)[untouched], BASE[q].view(-1)[untouched])
    assert torch.equal(out["layers.0.norm.weight"], BASE["layers.0.norm.weight"])


def export_state(base_dir, run, folder):
    """The tensors of a run exported the way the pipeline exports it, onto a loadable tiny model."""
    model = torch.nn.Module()
    for name, tensor in BASE.items():
        owner = model
        *path, leaf = name.split(".")
        for part in path:
            if not hasattr(owner, part):
                owner.add_module(part, torch.nn.Module())
            owner = getattr(owner, part)
        owner.register_parameter(leaf, torch.nn.Parameter(tensor.clone()))
    return {name: parameter.detach() for name, parameter in apply_weights(model, run).named_parameters()}


@pytest.mark.parametrize(
    ("method", "runs", "message"),
    [
        ("sparse_sum", "dense", "sparse_sum adds LoTA sparse deltas"),
        ("ties", "one", "a merge needs two or more"),
        ("ties", "lora", "is a LoRA adapter"),
        ("ties", "shape", "has shape"),
        ("ties", "missing", "run weights not found"),
    ],
)
def test_bad_runs_get_one_line_and_leave_no_output(tmp_path, base_dir, method, runs, message):
    good = dense_run(tmp_path / "good.safetensors", 1)
    other = {
        "dense": dense_run(tmp_path / "b.safetensors", 2),
        "lora": tmp_path / "lora.safetensors",
        "shape": tmp_path / "shape.safetensors",
        "missing": tmp_path / "nowhere.safetensors",
    }
    save_file({"a": torch.zeros(1)}, str(other["lora"]), {"format": LORA_ADAPTER_FORMAT})
    save_file({"embed.weight": torch.zeros(2, 2)}, str(other["shape"]), {"format": WEIGHTS_FORMAT})
    paths = [good] if runs == "one" else [good, other[runs]]
    with pytest.raises(UserError, match=message):
        merge(MergeArgs(base=base_dir, runs=paths, out=tmp_path / "out", method=method, density=0.5))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_dare_merges_are_reproducible_and_depend_on_the_seed(tmp_path, base_dir):
    runs = [dense_run(tmp_path / "a.safetensors", 1), dense_run(tmp_path / "b.safetensors", 2)]
    outputs = {}
    for label, seed in (("first", 0), ("again", 0), ("other", 1)):
        args = MergeArgs(base=base_dir, runs=runs, out=tmp_path / label, method="dare_ties", density=0.5, seed=seed)
        merge(args)
        outputs[label] = merged(tmp_path / label)
    assert all(torch.equal(outputs["first"][n], outputs["again"][n]) for n in BASE)
    assert not torch.equal(outputs["first"]["embed.weight"], outputs["other"]["embed.weight"])
    linear = MergeArgs(base=base_dir, runs=runs, out=tmp_path / "linear", method="dare_linear", density=1.0)
    merge(linear)
    plain = MergeArgs(base=base_dir, runs=runs, out=tmp_path / "plain", method="task_arithmetic")
    merge(plain)
    assert all(torch.equal(merged(tmp_path / "linear")[n], merged(tmp_path / "plain")[n]) for n in BASE)


# --- against mergekit --------------------------------------------------------------------


def fine_tuned(base_dir, out, seed):
    """A copy of the tiny model with every weight moved, saved as an HF directory and as run weights."""
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(out)
    tensors = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    save_file(tensors, str(out.with_suffix(".safetensors")), {"format": WEIGHTS_FORMAT})
    return out


@pytest.mark.parametrize(
    ("method", "parameters"),
    [("task_arithmetic", {"lambda": 0.8}), ("ties", {"lambda": 0.9, "density": 0.3})],
)
def test_ties_and_task_arithmetic_equal_mergekit(tmp_path, tiny_model, method, parameters):
    mergekit_merge = pytest.importorskip("mergekit.merge")
    from mergekit.config import MergeConfiguration
    from mergekit.options import MergeOptions

    models = [fine_tuned(tiny_model, tmp_path / name, seed) for name, seed in (("a", 1), ("b", 2))]
    weights = [1.0, 0.6]
    density = parameters.get("density", 1.0)
    config = {
        "merge_method": method,
        "base_model": str(tiny_model),
        "dtype": "float32",
        "parameters": {"lambda": parameters["lambda"]},
        "models": [
            {"model": str(path), "parameters": {"weight": weight, "density": density}}
            for path, weight in zip(models, weights, strict=True)
        ],
    }
    reference = tmp_path / "mergekit"
    options = MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True)
    mergekit_merge.run_merge(
        MergeConfiguration.model_validate(yaml.safe_load(yaml.safe_dump(config))), str(reference), options
    )
    args = MergeArgs(
        base=tiny_model,
        runs=[path.with_suffix(".safetensors") for path in models],
        out=tmp_path / "ours",
        method=method,
        scale=parameters["lambda"],
        density=density,
    )
    args.weights = weights
    merge(args)
    ours = merged(tmp_path / "ours")
    theirs = {}
    for file in reference.glob("*.safetensors"):
        theirs |= load_file(str(file))
    assert set(ours) <= set(theirs)
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[name], rtol=0, atol=1e-6, msg=name)
