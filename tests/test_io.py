import pytest
import torch
from safetensors.torch import save_file

from lota.errors import UserError
from lota.io import TensorReader, atomic_path, checkpoint_files, read_jsonl


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
