import pytest
import torch
from safetensors.torch import load_file, save_file

from lota.core.errors import UserError
from lota.core.io import WEIGHTS_FORMAT
from lota.deltas.sparse import save_sparse_delta
from lota.task_vector import TaskVectorArgs, run


def test_task_vector_is_exact_difference(tmp_path):
    base = {"a.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b.weight": torch.tensor([0.5, -0.25])}
    tuned = {"a.weight": torch.tensor([[1.5, 2.0], [2.0, 4.25]]), "b.weight": torch.tensor([0.5, 0.75])}
    (tmp_path / "base").mkdir()
    save_file(base, str(tmp_path / "base" / "model.safetensors"))
    save_file(tuned, str(tmp_path / "tuned.safetensors"), {"format": WEIGHTS_FORMAT})
    run(
        TaskVectorArgs(
            base=tmp_path / "base", finetuned=tmp_path / "tuned.safetensors", out=tmp_path / "tv.safetensors"
        )
    )
    delta = load_file(str(tmp_path / "tv.safetensors"))
    assert torch.equal(delta["a.weight"], torch.tensor([[0.5, 0.0], [-1.0, 0.25]]))
    assert torch.equal(delta["b.weight"], torch.tensor([0.0, 1.0]))


def test_task_vector_rejects_mismatched_models(tmp_path):
    (tmp_path / "base").mkdir()
    save_file({"a.weight": torch.zeros(2, 2)}, str(tmp_path / "base" / "model.safetensors"))
    save_file({"a.weight": torch.zeros(2, 3)}, str(tmp_path / "tuned.safetensors"), {"format": WEIGHTS_FORMAT})
    with pytest.raises(UserError, match="shape of a.weight differs"):
        run(
            TaskVectorArgs(
                base=tmp_path / "base", finetuned=tmp_path / "tuned.safetensors", out=tmp_path / "tv.safetensors"
            )
        )
    assert not (tmp_path / "tv.safetensors").exists()


def test_a_sparse_delta_is_its_own_task_vector_written_dense(tmp_path):
    (tmp_path / "base").mkdir()
    save_file({"a.weight": torch.ones(2, 3), "b.weight": torch.ones(2)}, str(tmp_path / "base" / "model.safetensors"))
    delta = {"a.weight": (torch.tensor([1, 5]), torch.tensor([0.5, -2.0]))}
    save_sparse_delta(tmp_path / "delta.safetensors", delta, {"a.weight": torch.Size([2, 3])})
    out = tmp_path / "tv.safetensors"
    run(TaskVectorArgs(base=tmp_path / "base", finetuned=tmp_path / "delta.safetensors", out=out))
    vector = load_file(str(out))
    assert list(vector) == ["a.weight"]
    assert torch.equal(vector["a.weight"], torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.0, -2.0]]))


def test_a_sparse_delta_for_another_model_is_refused(tmp_path):
    (tmp_path / "base").mkdir()
    save_file({"a.weight": torch.ones(3, 2)}, str(tmp_path / "base" / "model.safetensors"))
    delta = {"a.weight": (torch.tensor([1]), torch.tensor([0.5]))}
    save_sparse_delta(tmp_path / "delta.safetensors", delta, {"a.weight": torch.Size([2, 3])})
    out = tmp_path / "tv.safetensors"
    with pytest.raises(UserError, match=r"a.weight has shape \[2, 3\], the model's is \[3, 2\]"):
        run(TaskVectorArgs(base=tmp_path / "base", finetuned=tmp_path / "delta.safetensors", out=out))
    assert not out.exists()
