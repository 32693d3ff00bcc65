import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from lota.core.errors import UserError
from lota.core.io import TASK_VECTOR_FORMAT, WEIGHTS_FORMAT
from lota.deltas.sparse import save_sparse_delta
from lota.export import export


def test_export_of_a_sparse_delta_reloads_with_transformers(tmp_path, tiny_model):
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    name = "model.layers.1.mlp.down_proj.weight"
    shape = dict(base.named_parameters())[name].shape
    indices, values = torch.tensor([0, 5, 17]), torch.tensor([0.5, -0.25, 1.0])
    save_sparse_delta(tmp_path / "delta.safetensors", {name: (indices, values)}, {name: shape})
    export(tiny_model, [tmp_path / "delta.safetensors"], tmp_path / "out")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    expected = dict(base.named_parameters())[name].detach().clone().view(-1)
    expected[indices] += values
    assert torch.equal(dict(reloaded.named_parameters())[name].detach().view(-1), expected)
    for other, parameter in base.named_parameters():
        if other != name:
            assert torch.equal(dict(reloaded.named_parameters())[other], parameter), other
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(tiny_model).chat_template
    prompt = tokenizer("hello", return_tensors="pt")
    assert reloaded.generate(**prompt, max_new_tokens=2, do_sample=False).shape[1] == prompt.input_ids.shape[1] + 2


def test_export_of_dense_weights_replaces_them(tmp_path, tiny_model):
    name = "model.norm.weight"
    save_file({name: torch.full((16,), 2.0)}, str(tmp_path / "dense.safetensors"), {"format": WEIGHTS_FORMAT})
    export(tiny_model, [tmp_path / "dense.safetensors"], tmp_path / "out")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert torch.equal(reloaded.model.norm.weight.detach(), torch.full((16,), 2.0))


def test_export_rejects_weights_of_another_model(tmp_path, tiny_model):
    save_file({"model.norm.weight": torch.ones(17)}, str(tmp_path / "dense.safetensors"), {"format": WEIGHTS_FORMAT})
    with pytest.raises(UserError, match=r"model.norm.weight has shape \(17,\), the model's is \(16,\)"):
        export(tiny_model, [tmp_path / "dense.safetensors"], tmp_path / "out")
    save_sparse_delta(
        tmp_path / "delta.safetensors",
        {"nope.weight": (torch.tensor([0]), torch.ones(1))},
        {"nope.weight": torch.Size([2])},
    )
    with pytest.raises(UserError, match="has nope.weight, which the model does not have"):
        export(tiny_model, [tmp_path / "delta.safetensors"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_file_that_is_not_run_weights(tmp_path, tiny_model):
    save_file({"model.norm.weight": torch.ones(16)}, str(tmp_path / "tv.safetensors"), {"format": TASK_VECTOR_FORMAT})
    with pytest.raises(UserError, match="is not a run's weights file .*'lota-task-vector', expected 'lota-weights'"):
        export(tiny_model, [tmp_path / "tv.safetensors"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
