"""The training loop: optimizer steps of SFT or DPO over the seeded micro-batches, RoSA's
warm-up mask built mid-run, checkpoints and resuming, and the run directory it writes
(the train stage, lota.train, describes the outputs)."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lota.core import distributed
from lota.core.errors import UserError
from lota.core.io import atomic_path, read_jsonl, write_json
from lota.core.modeling import device, load_tokenizer, peak_memory_mb, reset_peak_memory, set_threads
from lota.core.tracking import TrackingArgs, tracked
from lota.deltas.masks import load_mask, save_mask
from lota.training import checkpoint, dpo
from lota.training.args import TrainArgs, validate
from lota.training.data import (
    IGNORE_INDEX,
    collate,
    optimizer_steps,
    process_share,
    response_sequence_count,
    response_token_count,
    tokenize_records,
)
from lota.training.gradients import warmup_mask, warmup_mask_info
from lota.training.losses import accepts_logits_to_keep, response_loss
from lota.training.model import load_for_training
from lota.training.optim import ParameterUpdater
from lota.training.trainable import base_parameters, make_updater, masked_entries, slots_of
from lota.training.weights import json_arguments, resume_settings, run_inputs, save_weights

log = logging.getLogger("lota.train")


@dataclass
class StepResult:
    loss: float  # mean over the step's response tokens (sft) or pairs (dpo)
    target_tokens: int
    tokens: int
    grad_norm: float
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # dpo: reward accuracy and margin


def train_step(
    model: torch.nn.Module,
    updater: ParameterUpdater,
    batches: Sequence[dict[str, torch.Tensor]],
    precision: str,
    on: torch.device,
    trim_logits: bool,
    loss_reduction: str = "token_mean",
) -> StepResult:
    """One optimizer step over the micro-batches `batches`, whose summed loss is divided by the
    step's response tokens (token_mean) or by its sequences (sequence_sum: each sequence's sum,
    averaged); the loss reported is the mean per response token either way."""
    # Every micro-batch's loss is divided by the step's count (on every process), so that
    # accumulation and sharding give the same mean as one large batch.
    target_tokens = int(distributed.total(sum(response_token_count(batch["labels"]) for batch in batches)))
    divisor = target_tokens
    if loss_reduction == "sequence_sum":
        divisor = int(distributed.total(sum(response_sequence_count(batch["labels"]) for batch in batches)))
    loss_sum, tokens = 0.0, 0
    for batch in batches:
        batch = {key: value.to(on) for key, value in batch.items()}
        with torch.autocast(on.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = response_loss(model, batch, trim_logits)
        (loss / divisor).backward()
        loss_sum += loss.item()
        # A process's stand-in example (no targets, see process_share) is not counted.
        tokens += int(batch["attention_mask"][(batch["labels"] != IGNORE_INDEX).any(1)].sum())
    grad_norm = updater.step()
    loss_sum, tokens = distributed.total(loss_sum), int(distributed.total(tokens))
    return StepResult(loss_sum / target_tokens, target_tokens, tokens, grad_norm)


def dpo_step(
    model: torch.nn.Module,
    updater: ParameterUpdater,
    batches: Sequence[dict[str, torch.Tensor]],
    references: Sequence[tuple[torch.Tensor, torch.Tensor]],
    args: TrainArgs,
    on: torch.device,
    trim_logits: bool,
) -> StepResult:
    """One optimizer step of DPO over micro-batches of pairs (dpo.pair_batch: chosen rows, then
    rejected), each with its pairs' reference log-probabilities."""
    pairs = sum(len(batch["input_ids"]) // 2 for batch in batches)
    loss_sum, target_tokens, tokens, wins, margins = 0.0, 0, 0, 0, 0.0
    for batch, (reference_chosen, reference_rejected) in zip(batches, references, strict=True):
        batch = {key: value.to(on) for key, value in batch.items()}
        with torch.autocast(on.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            chosen, rejected = dpo.sequence_logprobs(model, batch, trim_logits).chunk(2)
        losses, chosen_rewards, rejected_rewards = dpo.dpo_loss(
            chosen, rejected, reference_chosen.to(on), reference_rejected.to(on), args.beta, args.reference_free
        )
        (losses.sum() / pairs).backward()
        loss_sum += float(losses.detach().sum())
        wins += int((chosen_rewards > rejected_rewards).sum())
        margins += float((chosen_rewards - rejected_rewards).sum())
        target_tokens += response_token_count(batch["labels"])
        tokens += int(batch["attention_mask"].sum())
    grad_norm = updater.step()
    metrics = {"reward_accuracy": wins / pairs, "reward_margin": margins / pairs}
    return StepResult(loss_sum / pairs, target_tokens, tokens, grad_norm, metrics)


def micro_batch_pairs(pairs: Sequence[dpo.Pair], micro: list[tuple[float, list[int]]]) -> list[list[dpo.Pair]]:
    """The preference pairs of each micro-batch of an optimizer step."""
    return [[pairs[i] for i in chunk] for _, chunk in micro]


def dpo_references(
    model: torch.nn.Module,
    pairs: Sequence[dpo.Pair],
    steps: Sequence[list[tuple[float, list[int]]]],
    args: TrainArgs,
    pad_id: int,
    on: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The (chosen, rejected) reference log-probs of every micro-batch of `steps`, in order: the
    model's as it is now, or zeros when reference-free (an implicit uniform reference)."""
    groups = [group for micro in steps for group in micro_batch_pairs(pairs, micro)]
    if args.reference_free:
        return iter([(torch.zeros(len(group)), torch.zeros(len(group))) for group in groups])
    return iter(dpo.reference_logprobs(model, groups, pad_id, on, args.precision))


@contextmanager
def run_directory(out: Path) -> Iterator[Path]:
    """The run directory, written atomically by the main process; the others write to scratch."""
    if distributed.is_main():
        with atomic_path(out) as tmp:
            tmp.mkdir()
            yield tmp
    else:
        with tempfile.TemporaryDirectory(prefix="lota-train-") as scratch:
            yield Path(scratch)


def learning_rate(step: int, args: TrainArgs) -> float:
    """Linear warm-up over `warmup_steps` (step counts from 1), then constant."""
    return args.lr * min(1.0, step / args.warmup_steps) if args.warmup_steps else args.lr


def train(args: TrainArgs) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train as `args` say and write the run directory; return its summary and the trained model."""
    validate(args)
    if args.processes not in (1, distributed.launched_processes()):
        raise UserError(f"--processes {args.processes}, but torchrun started {distributed.launched_processes()}")
    on = distributed.start(device().type)
    if not distributed.is_main():
        logging.getLogger("lota").setLevel(logging.WARNING)  # one process reports
    torch.manual_seed(args.seed)
    threads = set_threads(args.threads)
    tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    records = read_jsonl(args.data, "training data")
    if args.loss == "dpo":
        examples = dpo.tokenize_preferences(records, tokenizer, args.max_length, args.data)
        lengths = [max(len(chosen[0]), len(rejected[0])) for chosen, rejected in examples]
    else:
        examples = tokenize_records(records, tokenizer, args.max_length, args.data, args.max_prompt_length)
        lengths = [len(ids) for ids, _ in examples]
    model = load_for_training(args, on)
    updater = make_updater(model, args)
    trim_logits = accepts_logits_to_keep(model)
    steps = optimizer_steps(lengths, args)
    trainable_count = int(distributed.total(updater.trainable_count))
    log.info(
        "%s: %d examples, %d steps, %d trainable parameters, %s weights, updates %s, on %d x %s (%d CPU threads each)",
        args.method,
        len(examples),
        len(steps),
        trainable_count,
        args.weights,
        "in the backward pass" if updater.in_backward else "after the backward pass",
        distributed.world_size(),
        on,
        threads,
    )

    if args.mask_warmup_steps >= len(steps):
        raise UserError(f"mask_warmup_steps {args.mask_warmup_steps} leaves no step of the {len(steps)} to the mask")

    checkpoint_dir = args.checkpoint_dir or args.out.with_name(f"{args.out.name}.checkpoint")
    run_fingerprint = checkpoint.fingerprint(resume_settings(args), run_inputs(args))
    # A warm-up mask is kept beside the checkpoints that train through it.
    saved_mask = checkpoint_dir / "warmup-mask.safetensors"
    resumable_step = checkpoint.resumable_step(checkpoint_dir, run_fingerprint)
    references = None  # dpo: the reference log-probs of each micro-batch still to run, in order
    if args.loss == "dpo":  # from the starting model, so before a checkpoint's weights are loaded
        references = dpo_references(model, examples, steps[resumable_step:], args, tokenizer.pad_token_id, on)
    masks = None
    if args.mask_warmup_steps and resumable_step >= args.mask_warmup_steps:
        masks = load_mask(saved_mask, {name: p.shape for name, p in base_parameters(model).items()})
        updater.add(slots_of(masked_entries(model, masks), args))
    progress = checkpoint.resume(checkpoint_dir, updater.slots, run_fingerprint, on) or checkpoint.Progress()
    resumed_from = progress.step
    checkpoints, checkpoint_s = 0, 0.0

    reset_peak_memory(on)
    tracking = args if distributed.is_main() else TrackingArgs()  # one process reports
    with run_directory(args.out) as tmp, tracked(tracking, args.out) as trackers:
        trackers.settings(json_arguments(args))
        for line in progress.log_lines:  # a resumed run's earlier steps, so each tracked run is whole
            earlier = json.loads(line)
            trackers.metrics(earlier, earlier["step"], prefix="train/")
        bar = tqdm(
            steps[resumed_from:],
            desc=f"train {args.method}",
            unit="step",
            initial=resumed_from,
            total=len(steps),
            disable=not distributed.is_main(),
        )
        with open(tmp / "log.jsonl", "w") as log_file:
            log_file.writelines(progress.log_lines)
            for step, micro in enumerate(bar, start=resumed_from + 1):
                step_started = time.perf_counter()
                lr = learning_rate(step, args)
                updater.set_lr(lr)
                if references is None:
                    batches = [collate(process_share(examples, chunk), tokenizer.pad_token_id) for _, chunk in micro]
                    result = train_step(model, updater, batches, args.precision, on, trim_logits, args.loss_reduction)
                else:
                    groups = micro_batch_pairs(examples, micro)
                    batches = [dpo.pair_batch(group, tokenizer.pad_token_id) for group in groups]
                    step_references = [next(references) for _ in groups]
                    result = dpo_step(model, updater, batches, step_references, args, on, trim_logits)
                elapsed = time.perf_counter() - step_started
                progress.step, progress.tokens, progress.last_loss = step, progress.tokens + result.tokens, result.loss
                progress.wall_s += elapsed
                record = {
                    "step": step,
                    "epoch": round(micro[-1][0], 4),
                    "loss": result.loss,
                    "lr": lr,
                    "grad_norm": result.grad_norm,
                    "tokens": result.tokens,
                    "tokens_per_s": result.tokens / elapsed,
                    "step_s": elapsed,
                    "peak_memory_mb": peak_memory_mb(on),
                    **result.metrics,
                }
                progress.log_lines.append(json.dumps(record) + "\n")
                log_file.write(progress.log_lines[-1])
                log_file.flush()
                trackers.metrics(record, step, prefix="train/")
                log.info(
                    "step %d/%d loss %.4f lr %.2e tokens/s %.0f peak %.0f MB",
                    step,
                    len(steps),
                    result.loss,
                    lr,
                    record["tokens_per_s"],
                    record["peak_memory_mb"],
                )
                if step == args.mask_warmup_steps:
                    masks = warmup_mask(model, args, examples, tokenizer.pad_token_id, on)
                    if args.checkpoint_every:
                        save_mask(saved_mask, masks, warmup_mask_info(args, masks))
                    updater.add(slots_of(masked_entries(model, masks), args))
                    log.info("rosa: mask built after step %d, %d trainable parameters", step, updater.trainable_count)
                if args.checkpoint_every and step % args.checkpoint_every == 0 and step < len(steps):
                    saving_started = time.perf_counter()
                    checkpoint.save(checkpoint_dir, updater.slots, progress, run_fingerprint, on)
                    saving_s = time.perf_counter() - saving_started
                    checkpoints, checkpoint_s = checkpoints + 1, checkpoint_s + saving_s
                    log.info("checkpoint after step %d in %.1f s: %s", step, saving_s, checkpoint_dir)
        wall = progress.wall_s
        updater.remove_hooks()
        save_weights(tmp / "weights.safetensors", args, model, updater)
        if masks is not None:
            save_mask(tmp / "mask.safetensors", masks, warmup_mask_info(args, masks))
        summary = {
            "method": args.method,
            "trainable_params": int(distributed.total(updater.trainable_count)),
            "total_params": sum(p.numel() for p in base_parameters(model).values()),
            "examples": len(examples),
            "steps": len(steps),
            "tokens": progress.tokens,
            "final_loss": progress.last_loss,
            "train_wall_s": wall,
            "tokens_per_s": progress.tokens / wall if wall else 0.0,
            "peak_memory_mb": peak_memory_mb(on),
            "optimizer_state_bytes": int(distributed.total(updater.state_bytes())),
            "updates_in_backward": updater.in_backward,
            "processes": distributed.world_size(),
            "resumed_from_step": resumed_from,
            "checkpoints": checkpoints,
            "checkpoint_s": checkpoint_s,
            "device": str(on),
            "cpu_threads": threads,
            "args": json_arguments(args),
        }
        write_json(tmp / "summary.json", summary)
        trackers.metrics({key: value for key, value in summary.items() if key != "args"}, len(steps), prefix="summary/")
    checkpoint.discard(checkpoint_dir)  # the run is complete: nothing to resume
    log.info("done in %.1f s: %s", wall, args.out)
    return summary, model
