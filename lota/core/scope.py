"""Which weights a scope covers: module names, "auto" standing for the model's projections.

A scope (mask.scope) or LoRA target list (lora.target_modules) names modules; a weight is covered
when its module's name is in it. Pure name logic, without torch, so that the plan checks both
settings at planning time against the base model's weight shapes (work/model_scope.json), as the
stages that use them do against the model they load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from lota.core.errors import UserError

AUTO_SCOPE = "auto"  # in a scope (or LoRA's targets): every projection of the model, see projections
DEFAULT_SCOPE = [AUTO_SCOPE]
SCOPE_KEY = "mask.scope"
TARGETS_KEY = "lora.target_modules"
_NUMBERED_LAYER = re.compile(r"\.\d+\.")  # model.layers.3., transformer.h.3., gpt_neox.layers.3.


def in_scope(name: str, scope: Iterable[str]) -> bool:
    """Whether a tensor named like 'model.layers.0.self_attn.q_proj.weight' is covered."""
    parts = name.split(".")
    return len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in set(scope)


def projections(shapes: Mapping[str, Sequence[int]]) -> list[str]:
    """The module names of the matrix weights inside numbered decoder layers, by tensor name and shape:
    the attention and MLP projections, whatever an architecture calls them (Llama's q_proj ... down_proj,
    Phi-3's qkv_proj and gate_up_proj, GPT-NeoX's query_key_value ... dense_4h_to_h, GPT-2's Conv1D c_attn,
    c_proj and c_fc). Norms (vectors) and the embeddings and head (outside the layers) are left out."""
    return sorted(
        {
            name.split(".")[-2]
            for name, shape in shapes.items()
            if name.endswith(".weight") and len(shape) == 2 and _NUMBERED_LAYER.search(name)
        }
    )


def resolve_scope(scope: Iterable[str], shapes: Mapping[str, Sequence[int]], key: str = SCOPE_KEY) -> list[str]:
    """The scope's module names, 'auto' standing for the model's projections; a UserError naming `key`
    and listing the projections where the scope covers no weight of the model (`shapes`)."""
    scope = list(scope)
    found = projections(shapes)
    names = sorted({name for name in scope if name != AUTO_SCOPE} | (set(found) if AUTO_SCOPE in scope else set()))
    if not any(in_scope(name, names) for name in shapes):
        listed = ", ".join(found) if found else "none"
        raise UserError(f"{key} {scope} covers no weight of the model; its projections are: {listed}")
    return names


def resolve_settings(
    shapes: Mapping[str, Sequence[int]], mask_scope: Iterable[str], lora_targets: Iterable[str]
) -> dict[str, list[str]]:
    """The module names mask.scope and lora.target_modules each cover, by key; a UserError naming the
    key of one that covers no weight of the model (`shapes`)."""
    return {
        SCOPE_KEY: resolve_scope(mask_scope, shapes, SCOPE_KEY),
        TARGETS_KEY: resolve_scope(lora_targets, shapes, TARGETS_KEY),
    }
