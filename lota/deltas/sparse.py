"""The sparse delta of a LoTA run: for each masked tensor, the flat indices of its trainable
entries and their change from the base, so `base.view(-1)[indices] += values` rebuilds it.

Stored as safetensors: '<name>.indices' (int32, or int64 for tensors of 2**31 entries or
more), '<name>.values' (float32), and metadata with the format and every tensor's shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from lota.core.errors import UserError
from lota.core.io import SPARSE_DELTA_FORMAT, TensorReader, save_tensors

SparseDelta = dict[str, tuple[torch.Tensor, torch.Tensor]]


def index_dtype(numel: int) -> torch.dtype:
    """int32 flat indices into a tensor of `numel` entries where they fit: half the memory of int64."""
    return torch.int32 if numel < 2**31 else torch.int64


def save_sparse_delta(
    path: Path, delta: Mapping[str, tuple[torch.Tensor, torch.Tensor]], shapes: Mapping[str, torch.Size]
) -> None:
    tensors = {}
    for name, (indices, values) in delta.items():
        tensors[f"{name}.indices"] = indices.to(index_dtype(shapes[name].numel())).contiguous()
        tensors[f"{name}.values"] = values.float().contiguous()
    metadata = {"format": SPARSE_DELTA_FORMAT, "shapes": json.dumps({n: list(shapes[n]) for n in delta})}
    save_tensors(path, tensors, metadata)


def is_sparse_delta(reader: TensorReader) -> bool:
    return reader.metadata.get("format") == SPARSE_DELTA_FORMAT


def sparse_delta_shapes(reader: TensorReader) -> dict[str, list[int]]:
    """name -> shape of every tensor an open sparse delta file changes."""
    try:
        return json.loads(reader.metadata["shapes"])
    except (KeyError, ValueError) as error:
        raise UserError(f"sparse delta is malformed: missing or bad entry {error}") from None


def read_sparse_entries(reader: TensorReader, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(int64 flat indices, float32 values) of one tensor of an open sparse delta file."""
    try:
        return reader.get(f"{name}.indices").long(), reader.get(f"{name}.values")
    except KeyError as error:
        raise UserError(f"sparse delta is malformed: missing entry {error}") from None


def read_sparse_delta(reader: TensorReader) -> tuple[SparseDelta, dict[str, list[int]]]:
    """(name -> (int64 indices, float32 values), name -> shape) from an open sparse delta file."""
    shapes = sparse_delta_shapes(reader)
    return {name: read_sparse_entries(reader, name) for name in shapes}, shapes


def check_entries(indices: torch.Tensor, values: torch.Tensor, numel: int, source: Path, name: str) -> None:
    """UserError unless a tensor's sparse entries are one value per index, each inside its `numel` entries."""
    in_range = indices.numel() == 0 or (0 <= int(indices.min()) and int(indices.max()) < numel)
    if indices.numel() != values.numel() or not in_range:
        raise UserError(f"sparse delta {source}: {name} has indices outside its entries or a length mismatch")


def apply_sparse_delta(
    parameters: Mapping[str, torch.Tensor], delta: SparseDelta, shapes: Mapping[str, list[int]], source: Path
) -> None:
    """Add each sparse delta onto the named parameter in place, checking names and shapes."""
    for name, (indices, values) in delta.items():
        if name not in parameters:
            raise UserError(f"sparse delta {source} has {name}, which the model does not have")
        parameter = parameters[name]
        if list(parameter.shape) != list(shapes[name]):
            raise UserError(
                f"sparse delta {source}: {name} has shape {shapes[name]}, the model's is {list(parameter.shape)}"
            )
        check_entries(indices, values, parameter.numel(), source, name)
        with torch.no_grad():
            parameter.view(-1).index_add_(0, indices.to(parameter.device), values.to(parameter.device, parameter.dtype))
