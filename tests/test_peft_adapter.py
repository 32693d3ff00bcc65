import pytest
import torch
from peft import PeftModel

from lota.core.errors import UserError
from lota.core.io import WEIGHTS_FORMAT, save_tensors
from lota.core.modeling import load_model
from lota.core.scope import in_scope, projections
from lota.deltas.masks import select_mask
from lota.deltas.peft import ADAPTER_NAME, adapter_sparsity, export_adapter, padded_support, peft_support_size
from lota.deltas.sparse import save_sparse_delta
from lota.export import export
from tests.conftest import TINY_ARCHITECTURES, build_tiny_model

# The q/o, k/v and MLP projections' entries
NUMELS = {"SmolLM2-135M": [576 * 576, 192 * 576, 1536 * 576], "Llama-3.1-8B": [4096**2, 1024 * 4096, 14336 * 4096]}
FITS = {("SmolLM2-135M", 0.5), ("SmolLM2-135M", 0.9)} | {("Llama-3.1-8B", s) for s in (0.5, 0.95, 0.99, 0.999)}


@pytest.mark.parametrize("model", NUMELS)
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.95, 0.99, 0.999])
def test_per_tensor_masks_fit_one_sparsity_or_nearly(model, sparsity):
    counts = {str(n): (round((1 - sparsity) * n), n) for n in NUMELS[model]}
    fitted = adapter_sparsity(counts)
    sizes = [peft_support_size(n, fitted) for _, n in counts.values()]
    wanted = [k for k, _ in counts.values()]
    assert (sizes == wanted) == ((model, sparsity) in FITS)
    assert all(size >= k for size, k in zip(sizes, wanted, strict=True))
    assert sum(sizes) - sum(wanted) <= 10  # a few entries of padding where the counts do not fit


def test_a_global_masks_densities_get_the_densest_tensors_share():
    counts = {"a": (100, 1000), "b": (50, 2000), "c": (1, 3)}  # densities 0.1, 0.025, 1/3
    fitted = adapter_sparsity(counts)
    assert [peft_support_size(n, fitted) for _, n in counts.values()] == [333, 666, 1]
    assert peft_support_size(3, fitted + 1e-9) == 0  # no sparsity above fits the densest tensor


def test_padding_adds_zeros_at_the_lowest_free_indices_sorted():
    indices, values = padded_support(torch.tensor([5, 1]), torch.tensor([0.5, 0.25]), size=4, numel=8)
    assert indices.dtype == torch.int32 and indices.tolist() == [0, 1, 2, 5]
    assert values.tolist() == [0.0, 0.25, 0.0, 0.5]


def write_lota_delta(path, model, granularity, sparsity=0.9, seed=0):
    """A sparse delta on every projection of `model`, masked at `sparsity` as extract_mask masks."""
    shapes = {name: parameter.shape for name, parameter in model.named_parameters()}
    scope = projections(shapes)
    generator = torch.Generator().manual_seed(seed)
    dense = {
        name: torch.randn(shape, generator=generator) * 0.01 for name, shape in shapes.items() if in_scope(name, scope)
    }
    masks = {name: mask.flatten() for name, mask in select_mask(dense, sparsity, granularity).items()}
    delta = {name: (masks[name].nonzero().flatten(), dense[name].flatten()[masks[name]]) for name in dense}
    save_sparse_delta(path, delta, shapes)
    return delta


# At 50% the tiny models' per-tensor counts fit one sparsity as they are (at 90% they do not:
# 26 of 256, 13 of 128 and 51 of 512 entries need densities in [0.1016, 0.1055) and [0.0996, 0.1016)).
@pytest.mark.parametrize(("granularity", "sparsity"), [("per_tensor", 0.5), ("global", 0.9)])
@pytest.mark.parametrize("model_type", [model_type for model_type in TINY_ARCHITECTURES if model_type != "gpt2"])
def test_the_adapter_loads_with_its_indices_and_gives_the_merged_exports_logits(
    smol_tokenizer, tmp_path, model_type, granularity, sparsity
):
    model_dir = build_tiny_model(tmp_path / model_type, smol_tokenizer, model_type)
    base = load_model(model_dir, torch.float32, False, torch.device("cpu"))
    delta = write_lota_delta(tmp_path / "delta.safetensors", base, granularity, sparsity)
    out = export_adapter(model_dir, tmp_path / "delta.safetensors", tmp_path / "adapter", base_name="org/base")
    merged = load_model(export(model_dir, [tmp_path / "delta.safetensors"], tmp_path / "merged"), torch.float32)

    adapter = PeftModel.from_pretrained(load_model(model_dir, torch.float32, False, torch.device("cpu")), out)
    assert adapter.peft_config[ADAPTER_NAME].base_model_name_or_path == "org/base"
    for name, (indices, values) in delta.items():
        layer = adapter.base_model.model.get_submodule(name.removesuffix(".weight"))
        loaded_indices = layer.supertuning_indices[ADAPTER_NAME].long()
        loaded_values = layer.supertuning_values[ADAPTER_NAME].detach()
        changed = torch.isin(loaded_indices, indices)
        assert int(changed.sum()) == indices.numel()  # the delta's own indices, not PEFT's magnitude pick
        assert torch.equal(loaded_values[changed], values[indices.argsort()])
        assert not loaded_values[~changed].any()  # any padding is zeros
        if granularity == "per_tensor":
            assert loaded_indices.numel() == indices.numel()
    tokens = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(adapter.eval()(tokens).logits, merged.eval()(tokens).logits)


def test_an_adapter_mostly_of_padding_is_refused_unless_allowed(tiny_model, tmp_path):
    """A delta that changes every entry of one tensor and one entry of another: one sparsity
    would size each layer to all its entries, 511 of the adapter's 768 zeros."""
    q_proj, down_proj = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight"
    delta = {q_proj: (torch.arange(256), torch.ones(256)), down_proj: (torch.tensor([3]), torch.ones(1))}
    shapes = {q_proj: torch.Size([16, 16]), down_proj: torch.Size([16, 32])}
    save_sparse_delta(tmp_path / "uneven.safetensors", delta, shapes)
    with pytest.raises(
        UserError, match=r"densities range from 0.20% to 100.00%, so one Super-Tuning sparsity needs 768"
    ):
        export_adapter(tiny_model, tmp_path / "uneven.safetensors", tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    export_adapter(tiny_model, tmp_path / "uneven.safetensors", tmp_path / "allowed", max_padding=1.0)
    assert (tmp_path / "allowed" / "adapter_model.safetensors").is_file()


def test_a_conv1d_a_norm_and_a_dense_run_have_no_adapter(tiny_model, smol_tokenizer, tmp_path):
    gpt2 = build_tiny_model(tmp_path / "gpt2", smol_tokenizer, "gpt2")
    write_lota_delta(tmp_path / "gpt2.safetensors", load_model(gpt2, torch.float32), "per_tensor")
    with pytest.raises(UserError, match=r"transformer.h.0.attn.c_attn.weight, a Conv1D: PEFT's Super-Tuning"):
        export_adapter(gpt2, tmp_path / "gpt2.safetensors", tmp_path / "gpt2-adapter")

    norm = "model.layers.0.input_layernorm.weight"
    save_sparse_delta(
        tmp_path / "norm.safetensors", {norm: (torch.tensor([0]), torch.tensor([1.0]))}, {norm: torch.Size([16])}
    )
    with pytest.raises(UserError, match=rf"changes {norm}, a LlamaRMSNorm: "):
        export_adapter(tiny_model, tmp_path / "norm.safetensors", tmp_path / "norm-adapter")

    q_proj = "model.layers.0.self_attn.q_proj.weight"
    entry = (torch.tensor([0]), torch.tensor([1.0]))
    save_sparse_delta(tmp_path / "other.safetensors", {q_proj: entry}, {q_proj: torch.Size([32, 8])})
    with pytest.raises(UserError, match=rf"{q_proj} has shape \[32, 8\], the model's is \[16, 16\]"):
        export_adapter(tiny_model, tmp_path / "other.safetensors", tmp_path / "other-adapter")

    dense = tmp_path / "dense.safetensors"
    save_tensors(dense, {norm: torch.ones(16)}, {"format": WEIGHTS_FORMAT})
    with pytest.raises(UserError, match="is not a sparse delta: only LoTA runs' weights"):
        export_adapter(tiny_model, dense, tmp_path / "dense-adapter")
    assert not any(path.name.endswith("adapter") for path in tmp_path.iterdir())
