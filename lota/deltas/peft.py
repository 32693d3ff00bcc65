"""A LoTA run's sparse delta as a PEFT Super-Tuning adapter, a folder that
`PeftModel.from_pretrained(base, folder)` loads with the delta's own indices, and whose model
gives the merged export's logits (the peft_adapter stage, lota.peft_adapter, writes one).

What a Super-Tuning adapter can carry (PEFT 0.21; each point is tested in tests/test_peft_adapter.py):
- Linear layers only: a delta on a Conv1D (GPT-2), an embedding, a norm or a bias is refused.
- One sparsity per adapter. Each layer sizes its support as int(n * (1 - sparsity)) and picks it
  by weight magnitude; at load, the saved indices and values replace that pick, so any support
  of that size loads, and one of another size fails the load.
So the sparsity written into the config is the one that sizes every layer's support as the
delta's count: a per-tensor mask's counts, round((1 - s) n), fit one sparsity close to s.
Where no one sparsity gives every count (a per-tensor mask off by an entry at some shapes; a
global mask, whose tensors each have their own density), the sparsity is the one that sizes
every support to at least the densest tensor's share, and each support is the mask's entries
plus zero-valued ones (the lowest free indices). The weights change exactly as the delta
changes them (w + 0.0 is w), but the adapter holds more entries than the mask, and training it
further in PEFT would train those too: the log says how many, and beyond --max-padding (half
the adapter by default) the stage refuses. A global mask usually is beyond it: on SmolLM2-135M a
global magnitude mask's tensors range from 0% to 31% dense at 90% sparsity (an adapter of 3.1x
the mask) and to 14% at 99% (14x).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from peft import SupertuningConfig, get_peft_model

from lota.core.cli import existing_file
from lota.core.errors import UserError
from lota.core.io import TensorReader, atomic_path
from lota.core.modeling import load_model
from lota.deltas.sparse import SparseDelta, check_entries, is_sparse_delta, read_sparse_delta

# Logged under the stage's name: the peft_adapter stage writes the adapter.
log = logging.getLogger("lota.peft_adapter")
ADAPTER_NAME = "default"  # PEFT's name for a model's only adapter, which save_pretrained leaves out of the keys


def peft_support_size(numel: int, sparsity: float) -> int:
    """The entries a Super-Tuning layer of `numel` weights trains (PEFT's SupertuningLayer._num_trainable)."""
    return int(numel * (1 - sparsity))


def adapter_sparsity(counts: Mapping[str, tuple[int, int]]) -> float:
    """The Super-Tuning sparsity for tensors of (entries changed, numel): one that sizes each
    support as its count where one does, else the highest that sizes each to at least its count."""
    densest = max(count / numel for count, numel in counts.values())
    below_next = min((count + 1) / numel for count, numel in counts.values())
    if densest < below_next:
        sparsity = 1 - (densest + below_next) / 2
        if all(peft_support_size(numel, sparsity) == count for count, numel in counts.values()):
            return sparsity
    sparsity = 1 - densest
    # 1 - densest is rounded, so the densest tensor may get one entry short: step down until it fits.
    while any(peft_support_size(numel, sparsity) < count for count, numel in counts.values()):
        sparsity = math.nextafter(sparsity, 0.0)
    return sparsity


def padded_support(
    indices: torch.Tensor, values: torch.Tensor, size: int, numel: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(int32 indices, float32 values) of `size` entries, sorted by index: the delta's own entries,
    then zero values at the lowest indices the delta does not change."""
    padding = size - indices.numel()
    free = torch.ones(numel, dtype=torch.bool)
    free[indices] = False
    extra = free.nonzero().flatten()[:padding]
    all_indices = torch.cat([indices, extra])
    all_values = torch.cat([values.float(), torch.zeros(padding)])
    order = all_indices.argsort()
    return all_indices[order].to(torch.int32), all_values[order]


def adapted_modules(
    model: torch.nn.Module, delta: SparseDelta, shapes: Mapping[str, list[int]], source: Path
) -> dict[str, str]:
    """tensor name -> the Linear module it is the weight of, for each tensor the delta changes;
    UserError naming the first tensor the model lacks or a Super-Tuning adapter cannot hold."""
    parameters = dict(model.named_parameters())
    modules = {}
    for name, (indices, values) in delta.items():
        if name not in parameters:
            raise UserError(f"sparse delta {source} has {name}, which the model does not have")
        if list(parameters[name].shape) != list(shapes[name]):
            expected = list(parameters[name].shape)
            raise UserError(f"sparse delta {source}: {name} has shape {shapes[name]}, the model's is {expected}")
        check_entries(indices, values, parameters[name].numel(), source, name)
        if indices.numel() == 0:
            continue  # a global mask may leave a tensor untouched: no layer to adapt
        module_name, _, leaf = name.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        if leaf != "weight" or not isinstance(module, torch.nn.Linear):
            kind = type(module).__name__ if leaf == "weight" else f"{type(module).__name__}'s {leaf}"
            raise UserError(
                f"sparse delta {source} changes {name}, a {kind}: PEFT's Super-Tuning adapts Linear "
                "layers' weights only, so this run has no adapter; its merged export is the way to load it"
            )
        modules[name] = module_name
    if not modules:
        raise UserError(f"sparse delta {source} changes no entries: there is no adapter to write")
    return modules


def check_padding(counts: Mapping[str, tuple[int, int]], sparsity: float, max_padding: float, source: Path) -> None:
    """UserError when more than `max_padding` of the adapter's entries would be padding: a
    global mask whose tensors' densities differ widely would make an adapter many times its size."""
    changed = sum(count for count, _ in counts.values())
    entries = sum(peft_support_size(numel, sparsity) for _, numel in counts.values())
    if (entries - changed) / entries > max_padding:
        densities = [count / numel for count, numel in counts.values()]
        raise UserError(
            f"sparse delta {source}: its tensors' densities range from {min(densities):.2%} to {max(densities):.2%}, "
            f"so one Super-Tuning sparsity needs {entries:,} entries for its {changed:,} "
            f"({1 - changed / entries:.0%} zeros, over --max-padding {max_padding:g}); a per_tensor mask "
            "(mask.granularity) makes an adapter of its own size, and the merged export loads this run"
        )


def export_adapter(
    base: Path,
    weights: Path,
    out: Path,
    base_name: str = "",
    trust_remote_code: bool = False,
    max_padding: float = 0.5,
) -> Path:
    existing_file(weights, "run weights")
    with TensorReader([weights]) as reader:
        if not is_sparse_delta(reader):
            raise UserError(
                f"{weights} is not a sparse delta: only LoTA runs' weights are Super-Tuning adapters; "
                "a LoRA run's weights are already a PEFT adapter, and dense runs have the merged export"
            )
        delta, shapes = read_sparse_delta(reader)
    model = load_model(base, torch.float32, trust_remote_code, torch.device("cpu"))
    modules = adapted_modules(model, delta, shapes, weights)
    numels = {name: math.prod(shapes[name]) for name in modules}
    counts = {name: (delta[name][0].numel(), numels[name]) for name in modules}
    sparsity = adapter_sparsity(counts)
    check_padding(counts, sparsity, max_padding, weights)
    config = SupertuningConfig(target_modules=sorted(modules.values()), sparsity=sparsity, inference_mode=True)
    adapter = get_peft_model(model, config)
    adapter.peft_config[ADAPTER_NAME].base_model_name_or_path = base_name or str(base)  # get_peft_model sets --base
    padding = 0
    with torch.no_grad():
        for name, module_name in modules.items():
            layer = adapter.base_model.model.get_submodule(module_name)
            size = layer.supertuning_values[ADAPTER_NAME].numel()
            indices, values = padded_support(*delta[name], size, numels[name])
            layer.supertuning_indices[ADAPTER_NAME] = indices
            layer.supertuning_values[ADAPTER_NAME].copy_(values)
            padding += size - delta[name][0].numel()
    changed = sum(delta[name][0].numel() for name in modules)
    with atomic_path(out) as tmp:
        adapter.save_pretrained(tmp, save_embedding_layers=False)  # no embeddings to save: no hub lookup
    log.info(
        "Super-Tuning adapter of %d layers, sparsity %.9g: %d changed entries and %d zero-valued ones "
        "(%.1f%% padding, so that one sparsity sizes every layer) -> %s",
        len(modules),
        sparsity,
        changed,
        padding,
        100 * padding / (changed + padding),
        out,
    )
    return out
