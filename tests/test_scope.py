import pytest

from lota.core.errors import UserError
from lota.core.scope import in_scope, projections, resolve_scope


def test_in_scope_matches_module_names_of_weights():
    scope = ["q_proj", "down_proj"]
    assert in_scope("model.layers.0.self_attn.q_proj.weight", scope)
    assert in_scope("model.layers.3.mlp.down_proj.weight", scope)
    assert not in_scope("model.layers.0.self_attn.q_proj.bias", scope)
    assert not in_scope("model.layers.0.self_attn.k_proj.weight", scope)
    assert not in_scope("model.embed_tokens.weight", scope)


def test_auto_scope_is_every_matrix_weight_inside_a_numbered_layer():
    shapes = {
        "transformer.wte.weight": (50, 8),  # outside the layers
        "transformer.h.0.ln_1.weight": (8,),  # a vector
        "transformer.h.0.attn.c_attn.weight": (8, 24),
        "transformer.h.0.attn.c_attn.bias": (24,),
        "transformer.h.1.mlp.c_fc.weight": (8, 32),
        "lm_head.weight": (50, 8),
    }
    assert projections(shapes) == ["c_attn", "c_fc"]
    assert resolve_scope(["auto"], shapes) == ["c_attn", "c_fc"]
    assert resolve_scope(["auto", "c_fc", "wte"], shapes) == ["c_attn", "c_fc", "wte"]
    assert resolve_scope(["c_fc"], shapes) == ["c_fc"]
    with pytest.raises(
        UserError, match=r"^mask.scope \['q_proj'\] covers no weight of the model; its projections are: c_attn, c_fc$"
    ):
        resolve_scope(["q_proj"], shapes)
    with pytest.raises(
        UserError, match=r"^lora.target_modules \['auto'\] covers no weight of the model; its projections are: none$"
    ):
        resolve_scope(["auto"], {"w.weight": (4, 4)}, "lora.target_modules")
