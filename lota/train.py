"""Stage train: dense fine-tuning (fft), sparse adaptation through a mask (lota), LoRA (lora), or
RoSA (rosa: LoRA adapters and the sparse update through a mask, trained together), all on one
engine (lota.training.optim), so the methods are compared on one code path.

The loss is the mean cross-entropy over response tokens only (--loss sft), or DPO's over
preference pairs (--loss dpo, lota.training.dpo) against the model training starts from, for
any method. For lota the model restarts from the base weights and only the mask's entries are
trained, with optimizer state for those entries alone; frozen entries are never written and
stay bit-identical to the base. Parameters no method trains get no gradient at all. By default
each parameter is updated inside the backward pass as soon as its gradient is complete, so no
full gradient buffer exists.

This module is the command line; the work is lota.training's (its options in
lota.training.args, the loop in lota.training.loop).

Launched by `torchrun --nproc-per-node N`, the model is sharded over N processes with FSDP2
(lota.core.distributed): each optimizer step's micro-batches are split among the processes, and
masks, master entries and optimizer state are sharded as the parameters are. The run directory
is the same as from one process, written by the first.

Outputs, in one directory written atomically:
  weights.safetensors  fft: every parameter; lota, rosa: the sparse delta (lota.deltas.sparse);
                       lora: the adapter (lota.deltas.lora)
  adapter.safetensors  rosa: the adapter
  mask.safetensors     rosa with --mask-warmup-steps: the mask built after the warm-up
  log.jsonl            one line per optimizer step: loss, lr, grad norm, tokens/s, peak memory
  summary.json         arguments, trainable parameter count, steps, tokens, wall time, memory

With --checkpoint-every N, a checkpoint is saved every N steps beside the run directory
(<out>.checkpoint, lota.training.checkpoint); a rerun of a killed run resumes from it and ends
bit-identical to an uninterrupted run. It is deleted when the run completes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from lota.core import distributed
from lota.core.cli import arg, run_main
from lota.training.args import TrainArgs, validate
from lota.training.loop import train
from lota.training.lr_choice import read_chosen_rate


@dataclass(kw_only=True)
class TrainStageArgs(TrainArgs):
    """The stage's options: the engine's (TrainArgs), and where the workflow chose the rate, the choice."""

    lr_from: Path | None = arg(
        None, "a learning rate chosen on the validation split (results/lr/<run>.json, lota.select_lr); replaces --lr"
    )


def engine_args(args: TrainStageArgs) -> TrainArgs:
    """The engine's options, at the chosen rate where the stage was given one."""
    settings = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainArgs)}
    if args.lr_from is not None:
        settings["lr"] = read_chosen_rate(args.lr_from)
    return TrainArgs(**settings)


def run(args: TrainStageArgs) -> None:
    """Fine-tune a causal LM densely (fft), through a sparse mask (lota), or with LoRA adapters (lora).

    With --processes N (or under torchrun), the model is sharded over N processes (FSDP2).
    """
    engine = engine_args(args)
    if engine.processes > 1 and distributed.launched_processes() == 1:
        validate(engine)  # bad input is reported once, before any process starts
        distributed.relaunch_under_torchrun(engine.processes, "lota.train")
    try:
        train(engine)
    finally:
        distributed.stop()


if __name__ == "__main__":
    run_main(TrainStageArgs, run)
