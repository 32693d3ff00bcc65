"""Atomic outputs, JSON Lines, and tensor-by-tensor access to safetensors checkpoints."""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import shutil
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch

from lota.core.errors import UserError

# The kinds of safetensors file the pipeline writes, named in each file's "format" metadata.
WEIGHTS_FORMAT = "lota-weights"
TASK_VECTOR_FORMAT = "lota-task-vector"
MASK_FORMAT = "lota-mask"
SPARSE_DELTA_FORMAT = "lota-sparse-delta"
LORA_ADAPTER_FORMAT = "lota-lora-adapter"
FISHER_FORMAT = "lota-fisher"


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final` (file or directory) and rename it into place on success.

    A job killed midway leaves only the hidden temporary, never something that looks finished.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create output folder {final.parent}: {error.strerror}") from None
    if not os.access(final.parent, os.W_OK | os.X_OK):
        raise UserError(f"output folder {final.parent} is not writable")
    # Leftovers of a killed earlier attempt are removed: only one job ever writes an output.
    for stale in final.parent.glob(f".{glob.escape(final.name)}.tmp-*"):
        _remove(stale)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    replaced = tmp.with_name(f"{tmp.name}-replaced")
    try:
        yield tmp
        if final.is_dir() and tmp.is_dir():
            # Moved aside, not deleted in place: a kill leaves the old directory whole or the new one.
            os.replace(final, replaced)
        try:
            os.replace(tmp, final)
        except OSError as error:  # e.g. a directory where a file goes
            raise UserError(f"cannot write output {final}: {error.strerror}") from None
    finally:
        _remove(tmp)
        _remove(replaced)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: Path, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_json(path: Path, what: str) -> Any:
    if not Path(path).is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{what} {path} is not valid JSON: {error}") from None


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: Path, what: str = "JSONL file") -> list[dict[str, Any]]:
    """All records of a JSON Lines file; a malformed or empty file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    records = []
    with open(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{number}: malformed JSON line ({error.msg})") from None
            if not isinstance(record, dict):
                raise UserError(f"{path}:{number}: expected a JSON object per line")
            records.append(record)
    if not records:
        raise UserError(f"{what} is empty: {path}")
    return records


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The safetensors files of an HF checkpoint directory (one file or an indexed shard set)."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index, "checkpoint index")["weight_map"].values()))
        return [model_dir / shard for shard in shards]
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    raise UserError(f"no safetensors checkpoint (model.safetensors) in {model_dir}")


SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
SAFETENSORS_NAMES = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}


class TensorReader(contextlib.AbstractContextManager):
    """Read named tensors one at a time from one or more safetensors files, never all at once.

    Each tensor is read from its offset into a buffer of its own rather than through a memory
    map, so a stage's resident memory is what it holds, not every page of the files it read.
    `renames` (stored name -> name) gives tensors the names a model's parameters have where the
    checkpoint stores them otherwise (lota.core.modeling.open_checkpoint); every method takes those names.
    """

    def __init__(self, files: Iterable[Path], renames: Mapping[str, str] | None = None):
        self._stack = contextlib.ExitStack()
        self._entries: dict[str, tuple[BinaryIO, torch.dtype, torch.Size, int, int]] = {}
        self._renames = dict(renames or {})
        self._stored = {name: stored for stored, name in self._renames.items()}
        self.metadata: dict[str, str] = {}
        for number, file in enumerate(files):
            try:
                handle = self._stack.enter_context(open(file, "rb"))
                metadata = self._read_header(handle)
            except (OSError, ValueError, KeyError, TypeError) as error:
                self._stack.close()
                raise UserError(f"cannot read safetensors file {file}: {error}") from None
            if number == 0:
                self.metadata = metadata

    def _read_header(self, handle: BinaryIO) -> dict[str, str]:
        size = os.fstat(handle.fileno()).st_size
        (length,) = struct.unpack("<Q", handle.read(8).ljust(8, b"\0"))
        if length > size - 8:
            raise ValueError("header longer than the file")
        header = json.loads(handle.read(length))
        metadata = header.pop("__metadata__", None) or {}
        for name, entry in header.items():
            dtype, shape = SAFETENSORS_NAMES[entry["dtype"]], torch.Size(entry["shape"])
            start, end = (8 + length + int(offset) for offset in entry["data_offsets"])
            if end - start != shape.numel() * dtype.itemsize or end > size:
                raise ValueError(f"tensor {name} has bad data offsets")
            self._entries[self._renames.get(name, name)] = (handle, dtype, shape, start, end)
        return metadata

    def require_format(self, expected: str, source: Path, what: str) -> None:
        """UserError unless the file's metadata says it is a `what` written by this pipeline."""
        found = self.metadata.get("format")
        if found != expected:
            raise UserError(f"{source} is not a {what} (metadata format {found!r}, expected {expected!r})")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def stored_name(self, name: str) -> str:
        """The name the file stores a tensor under (its own unless renamed)."""
        return self._stored.get(name, name)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> torch.Tensor:
        handle, dtype, shape, start, end = self._entries[name]
        if start == end:
            return torch.empty(shape, dtype=dtype)
        buffer = bytearray(end - start)
        handle.seek(start)
        handle.readinto(buffer)
        return torch.frombuffer(buffer, dtype=dtype).view(shape)

    def shapes(self) -> dict[str, torch.Size]:
        """Every tensor's shape, from the header."""
        return {name: shape for name, (_, _, shape, _, _) in sorted(self._entries.items())}

    def layout(self, name: str) -> tuple[torch.dtype, torch.Size]:
        """A tensor's dtype and shape, from the header."""
        _, dtype, shape, _, _ = self._entries[name]
        return dtype, shape

    def __exit__(self, *exc_info: Any) -> None:
        self._stack.close()


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write a safetensors file atomically, the same bytes for the same tensors and metadata.

    safetensors' own writer puts the metadata in a random order, so equal runs would differ.
    """
    layout = {name: (tensors[name].dtype, tuple(tensors[name].shape)) for name in sorted(tensors)}
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        stream = SafetensorsStream(file, layout, dict(sorted(metadata.items())))
        for name in layout:
            stream.write(name, tensors[name])
        stream.close()


class SafetensorsStream:
    """Write a safetensors file one tensor at a time, so a whole model is never held in memory.

    The header is laid out up front from every tensor's dtype and shape (`layout`, in file
    order); `write` then appends each tensor's bytes, in that order, checked against it.
    """

    def __init__(self, file: BinaryIO, layout: Mapping[str, tuple[torch.dtype, Sequence[int]]], metadata: dict):
        header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
        offset = 0
        for name, (dtype, shape) in layout.items():
            size = math.prod(shape) * dtype.itemsize
            header[name] = {
                "dtype": SAFETENSORS_DTYPES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        file.write(struct.pack("<Q", len(encoded)) + encoded)
        self._file = file
        self._pending = [(name, dtype, torch.Size(shape)) for name, (dtype, shape) in layout.items()]
        self._pending.reverse()

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected, dtype, shape = self._pending.pop()
        if (name, tensor.dtype, tensor.shape) != (expected, dtype, shape):
            raise ValueError(
                f"expected {expected} {dtype} {tuple(shape)}, got {name} {tensor.dtype} {tuple(tensor.shape)}"
            )
        self._file.write(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().data)

    def close(self) -> None:
        if self._pending:
            raise ValueError(f"{len(self._pending)} tensors were never written, the first {self._pending[-1][0]}")
