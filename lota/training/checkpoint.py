"""Resumable training: the train stage's checkpoints, written atomically, and resuming from them.

A checkpoint holds everything a run's future depends on: the trained values (each slot's fp32
master: every weight for fft, the mask's entries for lota, the adapters for lora), the optimizer
state, the number of optimizer steps done (which is the position in the seeded data order), the
random number generators' states, and the log and counters so far. Frozen weights are the base
model's and are not saved. A run resumed from step k therefore ends bit-identical to one that
was never stopped.

Layout of a checkpoint directory (one per run, beside the run directory):
  step-<k>/rank-<r>.safetensors   each process's slots (its shards) and generators after step k
  step-<k>/log.jsonl              the log of steps 1..k
  latest.json                     the step, the process count, the counters, and the run's
                                  fingerprint (its arguments and inputs)
Each process writes its file atomically; only when all have, the main process moves the
`latest.json` pointer (atomically) and deletes the older step. A job killed at any moment
leaves either the previous checkpoint or the new one, never a mix.

A checkpoint is resumed only by a run with the same fingerprint: the same arguments (threads
and the checkpoint interval aside), the same inputs (size and modification time, as Snakemake
judges them) and the same process count. Any other is deleted and the run starts over.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lota.core import distributed
from lota.core.errors import UserError
from lota.core.io import TensorReader, atomic_path, read_json, save_tensors, write_json
from lota.training.optim import Slot, write_back

log = logging.getLogger("lota.checkpoint")
CHECKPOINT_FORMAT = "lota-train-checkpoint"
POINTER = "latest.json"


@dataclass
class Progress:
    """What a run has done so far, beyond its tensors."""

    step: int = 0
    tokens: int = 0
    last_loss: float | None = None
    wall_s: float = 0.0  # training time over every attempt
    log_lines: list[str] = field(default_factory=list)


def fingerprint(settings: dict[str, Any], inputs: Sequence[Path]) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the settings, each input's size and modification
    time, and the process count."""
    stats = {}
    for path in inputs:
        stat = Path(path).stat()
        stats[str(path)] = [stat.st_size, stat.st_mtime_ns]
    return {"settings": settings, "inputs": stats, "processes": distributed.world_size()}


def _slot_tensors(slot: Slot) -> dict[str, torch.Tensor]:
    """A slot's master entries and optimizer state, by their names in the checkpoint."""
    tensors = {f"master/{slot.name}": slot.master}
    state = slot.optimizer.state.get(slot.master, {})
    tensors |= {f"state/{slot.name}/{key}": value for key, value in state.items() if isinstance(value, torch.Tensor)}
    return tensors


def _generator_states(on: torch.device) -> dict[str, torch.Tensor]:
    states = {"rng/cpu": torch.get_rng_state()}
    if on.type == "cuda":
        states["rng/cuda"] = torch.cuda.get_rng_state(on)
    return states


def save(
    directory: Path, slots: Sequence[Slot], progress: Progress, run_fingerprint: dict[str, Any], on: torch.device
) -> None:
    """Write the checkpoint after step `progress.step` (every process calls this: collective)."""
    step_dir = directory / f"step-{progress.step}"
    tensors = _generator_states(on)
    for slot in slots:
        tensors |= _slot_tensors(slot)
    metadata = {"format": CHECKPOINT_FORMAT, "step": str(progress.step)}
    save_tensors(step_dir / f"rank-{distributed.rank()}.safetensors", tensors, metadata)
    if distributed.is_main():
        with atomic_path(step_dir / "log.jsonl") as tmp:
            tmp.write_text("".join(progress.log_lines))
    distributed.barrier()  # every process's part is on disk before the pointer moves
    if distributed.is_main():
        pointer = {
            "step": progress.step,
            "tokens": progress.tokens,
            "last_loss": progress.last_loss,
            "wall_s": progress.wall_s,
            "fingerprint": run_fingerprint,
        }
        write_json(directory / POINTER, pointer)
        for older in directory.glob("step-*"):
            if older != step_dir:
                shutil.rmtree(older)
    distributed.barrier()


def resume(
    directory: Path, slots: Sequence[Slot], run_fingerprint: dict[str, Any], on: torch.device
) -> Progress | None:
    """Load the checkpoint in `directory` into the slots, optimizers and generators, and return the
    progress it records; None (having deleted any checkpoint there) when there is none to resume.
    """
    pointer = _pointer(directory, run_fingerprint)
    if pointer is None:
        return None
    step_dir = directory / f"step-{pointer['step']}"
    try:
        with TensorReader([step_dir / f"rank-{distributed.rank()}.safetensors"]) as reader:
            reader.require_format(CHECKPOINT_FORMAT, step_dir, "training checkpoint")
            with torch.no_grad():
                for slot in slots:
                    _load_slot(slot, reader)
            torch.set_rng_state(reader.get("rng/cpu"))
            if on.type == "cuda":
                torch.cuda.set_rng_state(reader.get("rng/cuda"), on)
        log_lines = (step_dir / "log.jsonl").read_text().splitlines(keepends=True)
    except (UserError, KeyError, ValueError, OSError) as error:
        raise UserError(f"cannot resume from {step_dir} ({error}); delete {directory} to start over") from None
    log.info("resuming from the checkpoint after step %d: %s", pointer["step"], step_dir)
    return Progress(pointer["step"], pointer["tokens"], pointer["last_loss"], pointer["wall_s"], log_lines)


def resumable_step(directory: Path, run_fingerprint: dict[str, Any]) -> int:
    """The step after which the checkpoint in `directory` was saved, if this run can resume it,
    else 0 (having deleted any checkpoint there)."""
    pointer = _pointer(directory, run_fingerprint)
    return pointer["step"] if pointer else 0


def _pointer(directory: Path, run_fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The pointer of this run's checkpoint in `directory`; None, having deleted the directory,
    when there is none or it is another run's."""
    pointer_path = directory / POINTER
    if not pointer_path.is_file():
        discard(directory)
        return None
    pointer = read_json(pointer_path, "training checkpoint pointer")
    differs = _first_difference(pointer.get("fingerprint"), run_fingerprint)
    if differs:
        log.warning("checkpoint %s is not this run's (%s differs): starting over", directory, differs)
        distributed.barrier()  # every process has read the pointer before it goes
        discard(directory)
        return None
    return pointer


def _load_slot(slot: Slot, reader: TensorReader) -> None:
    master = reader.get(f"master/{slot.name}")
    if master.shape != slot.master.shape:
        raise ValueError(f"{slot.name} has {master.numel()} trained entries, the run {slot.master.numel()}")
    slot.master.copy_(master)
    write_back(slot)
    prefix = f"state/{slot.name}/"
    state = {name.removeprefix(prefix): reader.get(name) for name in reader.names() if name.startswith(prefix)}
    if state:
        # load_state_dict moves each value to the master's device, and the step counter as the optimizer keeps it.
        param_groups = slot.optimizer.state_dict()["param_groups"]
        slot.optimizer.load_state_dict({"state": {0: state}, "param_groups": param_groups})


def _first_difference(saved: Any, current: dict[str, Any]) -> str | None:
    """What of the saved fingerprint differs from the current one, in words; None if nothing."""
    if not isinstance(saved, dict):
        return "the fingerprint"
    if saved.get("processes") != current["processes"]:
        return "the process count"
    for part, what in (("inputs", "input"), ("settings", "argument")):
        before, now = saved.get(part) or {}, current[part]
        for key in sorted(set(before) | set(now)):
            if before.get(key) != now.get(key):
                return f"{what} {key}"
    return None


def discard(directory: Path) -> None:
    """Delete a run's checkpoint (the main process does; the others wait for it)."""
    if distributed.is_main() and directory.exists():
        shutil.rmtree(directory)
    distributed.barrier()
