import pytest
import torch
from safetensors.torch import load_file, save_file

from lota.core.errors import UserError
from lota.core.io import SafetensorsStream, TensorReader, atomic_path, checkpoint_files, read_jsonl


def test_atomic_path_publishes_only_on_success(tmp_path):
    target = tmp_path / "out" / "file.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"


def test_atomic_path_clears_what_a_killed_attempt_left(tmp_path):
    leftover = tmp_path / ".model.tmp-12345"
    leftover.mkdir()
    (leftover / "half.bin").write_text("partial")
    with atomic_path(tmp_path / "model") as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_path_replaces_a_directory_whole(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.bin").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.bin").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.bin"]


def test_read_jsonl_errors_name_the_file_and_line(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="records is empty: .*empty.jsonl"):
        read_jsonl(tmp_path / "empty.jsonl", "records")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(UserError, match="list.jsonl:1: expected a JSON object"):
        read_jsonl(tmp_path / "list.jsonl")


def test_tensor_reader_spans_shards_and_rejects_corrupt_files(tmp_path):
    save_file({"a": torch.ones(2)}, str(tmp_path / "one.safetensors"))
    save_file({"b": torch.zeros(3)}, str(tmp_path / "two.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "one.safetensors", "b": "two.safetensors"}}'
    )
    with TensorReader(checkpoint_files(tmp_path)) as reader:
        assert reader.names() == ["a", "b"] and torch.equal(reader.get("b"), torch.zeros(3))
    (tmp_path / "bad.safetensors").write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":')
    with pytest.raises(UserError, match="cannot read safetensors file .*bad.safetensors"):
        TensorReader([tmp_path / "bad.safetensors"])
    with pytest.raises(UserError, match="no safetensors checkpoint"):
        checkpoint_files(tmp_path / "missing")


def test_tensors_streamed_one_at_a_time_read_back_exactly_and_in_any_dtype(tmp_path):
    tensors = {
        "b.weight": torch.randn(3, 5),
        "a.indices": torch.arange(7, dtype=torch.int32),
        "c": torch.randn(4, dtype=torch.bfloat16),
        "d": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 2),
    }
    path = tmp_path / "streamed.safetensors"
    with open(path, "wb") as file:
        stream = SafetensorsStream(file, {name: (t.dtype, t.shape) for name, t in tensors.items()}, {"format": "x"})
        for name, tensor in tensors.items():
            stream.write(name, tensor)
        stream.close()
    loaded = load_file(str(path))  # the safetensors library reads it
    assert all(torch.equal(loaded[name], tensor) for name, tensor in tensors.items())
    with TensorReader([path]) as reader:
        assert reader.metadata == {"format": "x"} and reader.layout("c") == (torch.bfloat16, torch.Size([4]))
        assert all(torch.equal(reader.get(name), tensor) for name, tensor in tensors.items())


def test_a_stream_refuses_tensors_out_of_its_layout(tmp_path):
    with open(tmp_path / "x.safetensors", "wb") as file:
        stream = SafetensorsStream(file, {"a": (torch.float32, (2,)), "b": (torch.float32, (1,))}, {})
        with pytest.raises(ValueError, match="expected a torch.float32"):
            stream.write("b", torch.zeros(1))
    with open(tmp_path / "y.safetensors", "wb") as file:
        stream = SafetensorsStream(file, {"a": (torch.float32, (2,))}, {})
        with pytest.raises(ValueError, match="1 tensors were never written, the first a"):
            stream.close()
