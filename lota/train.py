"""Stage train: dense fine-tuning (fft) or sparse adaptation through a mask (lota).

The loss is the mean cross-entropy over response tokens only. For lota the model restarts
from the base weights and only the mask's entries are trained: the optimizer works on a
compact copy of those entries (so its state is that size too) and writes them back by index,
so frozen entries are never written and stay bit-identical to the base under any optimizer,
weight decay or momentum. Parameters the mask does not cover get no gradient at all.

Outputs, in one directory written atomically:
  weights.safetensors  fft: every parameter; lota: the sparse delta (see lota.sparse_delta)
  log.jsonl            one line per optimizer step: loss, lr, grad norm, tokens/s, peak memory
  summary.json         arguments, trainable parameter count, steps, tokens, wall time
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from lota.cli import arg, check_range, existing_file, run_main, threads_arg, trust_remote_code_arg
from lota.errors import UserError
from lota.extract_mask import load_mask
from lota.io import WEIGHTS_FORMAT, atomic_path, read_jsonl, write_json
from lota.modeling import device, load_model, load_tokenizer, peak_memory_mb, set_threads
from lota.sparse_delta import save_sparse_delta

log = logging.getLogger("lota.train")
IGNORE_INDEX = -100


@dataclass
class TrainArgs:
    model: Path = arg(help="base HF model directory (training starts from these weights)")
    data: Path = arg(help="training records (JSONL with prompt and response)")
    out: Path = arg(help="output directory")
    method: Literal["fft", "lota"] = arg("fft", "fft trains every weight; lota only the mask's entries")
    mask: Path | None = arg(None, "mask file (required for lota)")
    optimizer: Literal["adamw", "rmsprop"] = arg(
        "adamw", "AdamW, or RMSprop as in the LoTA paper (alpha 0.99, no momentum)"
    )
    lr: float = arg(1e-5, "learning rate")
    weight_decay: float = arg(0.0, "decoupled weight decay (AdamW) or L2 term (RMSprop)")
    epochs: float = arg(1.0, "passes over the data; a fraction stops part-way through the last one")
    max_steps: int = arg(0, "stop after this many optimizer steps (0: no limit)")
    batch_size: int = arg(8, "sequences per micro-batch")
    grad_accum: int = arg(1, "micro-batches per optimizer step")
    max_length: int = arg(512, "tokens per sequence; longer ones are truncated at the end")
    clip: Literal["per_tensor", "global", "none"] = arg(
        "per_tensor", "gradient clipping: each tensor's norm (the paper's), the global norm, or none"
    )
    max_grad_norm: float = arg(1.0, "clipping threshold")
    warmup_steps: int = arg(0, "linear warm-up steps, then a constant learning rate")
    precision: Literal["bf16", "fp32"] = arg("bf16", "bf16 autocast over fp32 weights, or plain fp32")
    seed: int = arg(0, "seed of the data order and of any randomness in the model")
    threads: int = threads_arg()
    trust_remote_code: bool = trust_remote_code_arg()


def validate(args: TrainArgs) -> None:
    check_range("lr", args.lr, 0.0, 1.0)
    if args.lr == 0:
        raise UserError("lr must be > 0")
    check_range("weight_decay", args.weight_decay, 0.0, 1.0)
    check_range("max_grad_norm", args.max_grad_norm, 1e-12, math.inf)
    for name, low in (("batch_size", 1), ("grad_accum", 1), ("max_length", 2), ("max_steps", 0), ("warmup_steps", 0)):
        if getattr(args, name) < low:
            raise UserError(f"{name} must be >= {low}, got {getattr(args, name)}")
    if not args.epochs > 0 or math.isinf(args.epochs):
        raise UserError(f"epochs must be a positive number, got {args.epochs}")
    if args.method == "lota" and args.mask is None:
        raise UserError("method lota needs --mask")
    existing_file(args.data, "training data")
    if args.mask is not None:
        existing_file(args.mask, "mask file")


# --- data -------------------------------------------------------------------------------


def tokenize_example(
    prompt: str, response: str, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[list[int], list[int]]:
    """(input ids, labels) with the prompt's labels ignored, truncated to max_length."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    response_ids = tokenizer(response, add_special_tokens=False).input_ids
    input_ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    return input_ids, labels


def tokenize_records(
    records: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, max_length: int, source: Path
) -> list[tuple[list[int], list[int]]]:
    examples = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record.get("prompt"), str) or not isinstance(record.get("response"), str):
            raise UserError(f"{source}: record {number} needs string fields 'prompt' and 'response'")
        input_ids, labels = tokenize_example(record["prompt"], record["response"], tokenizer, max_length)
        if any(label != IGNORE_INDEX for label in labels[1:]):
            examples.append((input_ids, labels))
    if not examples:
        raise UserError(f"{source}: no record keeps a response token within max_length={max_length}")
    if len(examples) < len(records):
        log.warning(
            "%d of %d records dropped: prompt fills max_length=%d",
            len(records) - len(examples),
            len(records),
            max_length,
        )
    return examples


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to its longest sequence."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, target) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(target)] = torch.tensor(target)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def micro_batches(n_examples: int, batch_size: int, epochs: float, seed: int) -> Iterator[tuple[float, list[int]]]:
    """(fractional epoch, example indices) per micro-batch; each epoch is a fresh seeded shuffle."""
    total = math.ceil(epochs * n_examples)
    served, epoch = 0, 0
    while served < total:
        order = list(range(n_examples))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        order = order[: total - served]
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            served += len(chunk)
            yield served / n_examples, chunk
        epoch += 1


# --- optimization ---------------------------------------------------------------------------


class MaskedOptimizer:
    """A torch optimizer over chosen entries of each parameter.

    A dense parameter (indices None) is optimized as it is. A masked one is optimized through
    a compact leaf holding only its trainable entries: before each step the gradient is
    gathered at those indices, after it the entries are written back with index_copy_.
    """

    def __init__(
        self,
        parameters: Sequence[tuple[torch.nn.Parameter, torch.Tensor | None]],
        kind: str,
        lr: float,
        weight_decay: float,
    ):
        self.slots = []
        for parameter, indices in parameters:
            if indices is None:
                self.slots.append((parameter, None, parameter))
            else:
                compact = parameter.detach().view(-1)[indices]  # indexing copies
                self.slots.append((parameter, indices, compact))
        leaves = [leaf for _, _, leaf in self.slots]
        if kind == "adamw":
            self.optimizer = torch.optim.AdamW(leaves, lr=lr, weight_decay=weight_decay)
        elif kind == "rmsprop":
            self.optimizer = torch.optim.RMSprop(leaves, lr=lr, alpha=0.99, momentum=0.0, weight_decay=weight_decay)
        else:
            raise UserError(f"unknown optimizer {kind!r}; known: adamw, rmsprop")

    @property
    def trainable_count(self) -> int:
        return sum(leaf.numel() for _, _, leaf in self.slots)

    @torch.no_grad()
    def gather_gradients(self) -> list[torch.Tensor]:
        grads = []
        for parameter, indices, leaf in self.slots:
            if indices is not None:
                leaf.grad = parameter.grad.view(-1)[indices] if parameter.grad is not None else None
                parameter.grad = None
            if leaf.grad is not None:
                grads.append(leaf.grad)
        return grads

    @torch.no_grad()
    def step(self) -> None:
        self.optimizer.step()
        for parameter, indices, leaf in self.slots:
            if indices is not None:
                parameter.view(-1).index_copy_(0, indices, leaf)

    def zero_grad(self) -> None:
        for parameter, _, leaf in self.slots:
            parameter.grad = None
            leaf.grad = None


@torch.no_grad()
def clip_gradients(grads: Sequence[torch.Tensor], mode: str, max_norm: float) -> float:
    """Clip in place, each tensor to `max_norm` or all together; return the global norm before."""
    if not grads:
        return 0.0
    norms = torch.stack([g.float().norm() for g in grads])
    total = norms.norm()
    if mode == "per_tensor":
        for grad, norm in zip(grads, norms, strict=True):
            grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    elif mode == "global":
        torch._foreach_mul_(list(grads), torch.clamp(max_norm / (total + 1e-6), max=1.0))
    elif mode != "none":
        raise UserError(f"clip must be per_tensor, global or none, got {mode!r}")
    return float(total)


def response_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over the response tokens (labels not IGNORE_INDEX)."""
    shifted_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(shifted_logits, labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")


# --- the loop ---------------------------------------------------------------------------

Chosen = list[tuple[str, torch.nn.Parameter, torch.Tensor | None]]


def trainable_parameters(model: torch.nn.Module, method: str, mask_path: Path | None) -> Chosen:
    """(name, parameter, trainable flat indices or None for all); others get requires_grad False."""
    named = dict(model.named_parameters())
    if method == "fft":
        return [(name, p, None) for name, p in named.items()]
    masks = load_mask(mask_path, {name: p.shape for name, p in named.items()})
    chosen = []
    for name, parameter in named.items():
        indices = masks[name].flatten().nonzero().squeeze(1).to(parameter.device) if name in masks else None
        if indices is None or indices.numel() == 0:
            parameter.requires_grad_(False)
        else:
            chosen.append((name, parameter, indices))
    return chosen


def optimizer_steps(n_examples: int, args: TrainArgs) -> list[list[tuple[float, list[int]]]]:
    """The micro-batches of each optimizer step, at most max_steps of them."""
    batches = list(micro_batches(n_examples, args.batch_size, args.epochs, args.seed))
    steps = [batches[start : start + args.grad_accum] for start in range(0, len(batches), args.grad_accum)]
    return steps[: args.max_steps] if args.max_steps else steps


def save_weights(path: Path, method: str, chosen: Chosen, base_values: dict[str, torch.Tensor]) -> None:
    """fft: every trained parameter; lota: the sparse delta of the trained entries from the base."""
    if method == "fft":
        tensors = {name: p.detach().contiguous().cpu() for name, p, _ in chosen}
        save_file(tensors, str(path), metadata={"format": WEIGHTS_FORMAT})
        return
    delta = {name: (idx.cpu(), (p.detach().view(-1)[idx] - base_values[name]).cpu()) for name, p, idx in chosen}
    save_sparse_delta(path, delta, {name: p.shape for name, p, _ in chosen})


def train(args: TrainArgs) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train as `args` say and write the run directory; return its summary and the trained model."""
    validate(args)
    torch.manual_seed(args.seed)
    threads = set_threads(args.threads)
    on = device()
    tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    examples = tokenize_records(read_jsonl(args.data, "training data"), tokenizer, args.max_length, args.data)
    model = load_model(args.model, torch.float32, args.trust_remote_code, on)
    model.config.use_cache = False
    model.train()
    chosen = trainable_parameters(model, args.method, args.mask)
    base_values = {name: p.detach().view(-1)[idx].clone() for name, p, idx in chosen if idx is not None}
    optimizer = MaskedOptimizer([(p, idx) for _, p, idx in chosen], args.optimizer, args.lr, args.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer.optimizer, lambda step: min(1.0, (step + 1) / args.warmup_steps) if args.warmup_steps else 1.0
    )
    steps = optimizer_steps(len(examples), args)
    log.info(
        "%s: %d examples, %d steps, %d trainable parameters on %s (%d CPU threads)",
        args.method,
        len(examples),
        len(steps),
        optimizer.trainable_count,
        on,
        threads,
    )

    autocast = torch.autocast(on.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        started = time.perf_counter()
        total_tokens, last_loss = 0, None
        with open(tmp / "log.jsonl", "w") as log_file:
            for step, micro in enumerate(tqdm(steps, desc=f"train {args.method}", unit="step"), start=1):
                step_started = time.perf_counter()
                encoded = [collate([examples[i] for i in chunk], tokenizer.pad_token_id) for _, chunk in micro]
                # Every micro-batch's loss is divided by the step's response tokens, so that
                # accumulation gives the same mean as one large batch.
                target_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in encoded)
                loss_sum, step_tokens = 0.0, 0
                for batch in encoded:
                    batch = {key: value.to(on) for key, value in batch.items()}
                    with autocast:
                        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                    loss = response_loss(logits, batch["labels"])
                    (loss / target_tokens).backward()
                    loss_sum += loss.item()
                    step_tokens += int(batch["attention_mask"].sum())
                grad_norm = clip_gradients(optimizer.gather_gradients(), args.clip, args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
                lr = schedule.get_last_lr()[0]
                schedule.step()
                elapsed = time.perf_counter() - step_started
                total_tokens += step_tokens
                last_loss = loss_sum / target_tokens
                record = {
                    "step": step,
                    "epoch": round(micro[-1][0], 4),
                    "loss": last_loss,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "tokens": step_tokens,
                    "tokens_per_s": step_tokens / elapsed,
                    "step_s": elapsed,
                    "peak_memory_mb": peak_memory_mb(on),
                }
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                log.info(
                    "step %d/%d loss %.4f lr %.2e tokens/s %.0f peak %.0f MB",
                    step,
                    len(steps),
                    last_loss,
                    lr,
                    record["tokens_per_s"],
                    record["peak_memory_mb"],
                )
        wall = time.perf_counter() - started
        save_weights(tmp / "weights.safetensors", args.method, chosen, base_values)
        summary = {
            "method": args.method,
            "trainable_params": optimizer.trainable_count,
            "total_params": sum(p.numel() for p in model.parameters()),
            "examples": len(examples),
            "steps": len(steps),
            "tokens": total_tokens,
            "final_loss": last_loss,
            "train_wall_s": wall,
            "tokens_per_s": total_tokens / wall if wall else 0.0,
            "peak_memory_mb": peak_memory_mb(on),
            "device": str(on),
            "cpu_threads": threads,
            "args": {
                key: str(value) if isinstance(value, Path) else value for key, value in dataclasses.asdict(args).items()
            },
        }
        write_json(tmp / "summary.json", summary)
    log.info("done in %.1f s: %s", wall, args.out)
    return summary, model


def run(args: TrainArgs) -> None:
    """Fine-tune a causal LM densely (fft) or through a sparse mask (lota)."""
    train(args)


if __name__ == "__main__":
    run_main(TrainArgs, run)
