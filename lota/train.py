"""Stage train: dense fine-tuning (fft), sparse adaptation through a mask (lota), or LoRA (lora),
all on one engine (lota.optim), so the three methods are compared on one code path.

The loss is the mean cross-entropy over response tokens only. For lota the model restarts from
the base weights and only the mask's entries are trained, with optimizer state for those entries
alone; frozen entries are never written and stay bit-identical to the base. Parameters no
method trains get no gradient at all. By default each parameter is updated inside the backward
pass as soon as its gradient is complete, so no full gradient buffer exists.

Outputs, in one directory written atomically:
  weights.safetensors  fft: every parameter; lota: the sparse delta (lota.sparse_delta);
                       lora: the adapter (lota.lora)
  log.jsonl            one line per optimizer step: loss, lr, grad norm, tokens/s, peak memory
  summary.json         arguments, trainable parameter count, steps, tokens, wall time, memory
"""

from __future__ import annotations

import dataclasses
import inspect
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
from peft import PeftModel
from safetensors.torch import save_file
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from lota.cli import arg, check_range, existing_file, run_main, threads_arg, trust_remote_code_arg
from lota.errors import UserError
from lota.extract_mask import DEFAULT_SCOPE, load_mask
from lota.io import WEIGHTS_FORMAT, TensorReader, atomic_path, checkpoint_files, read_jsonl, write_json
from lota.lora import LoraSettings, add_lora, save_lora_adapter
from lota.modeling import device, load_model, load_tokenizer, peak_memory_mb, reset_peak_memory, set_threads
from lota.optim import ParameterUpdater, make_slots
from lota.sparse_delta import save_sparse_delta

log = logging.getLogger("lota.train")
IGNORE_INDEX = -100


@dataclass
class TrainArgs:
    model: Path = arg(help="base HF model directory (training starts from these weights)")
    data: Path = arg(help="training records (JSONL with prompt and response)")
    out: Path = arg(help="output directory")
    method: Literal["fft", "lota", "lora"] = arg(
        "fft", "fft trains every weight; lota only the mask's entries; lora low-rank adapters (PEFT)"
    )
    mask: Path | None = arg(None, "mask file (required for lota)")
    lora_rank: int = arg(16, "LoRA rank r")
    lora_alpha: float = arg(32.0, "LoRA alpha; the update is scaled by alpha / r")
    lora_dropout: float = arg(0.0, "dropout on the LoRA input")
    lora_targets: list[str] = arg(DEFAULT_SCOPE, "module names that get LoRA adapters")
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
    precision: Literal["bf16", "fp32"] = arg("bf16", "compute in bf16 (autocast over fp32 weights), or in fp32")
    weights: Literal["fp32", "bf16"] = arg(
        "fp32", "dtype of the model's weights; bf16 keeps an fp32 master copy of the trainable entries only"
    )
    activation_checkpointing: bool = arg(False, "recompute activations in the backward pass: less memory, more time")
    attention: Literal["sdpa", "eager"] = arg(
        "sdpa", "attention kernel: sdpa keeps memory linear in length; eager can be faster on CPU for short sequences"
    )
    compile: bool = arg(False, "torch.compile each decoder layer (compiling takes a minute or two per input shape)")
    optimizer_in_backward: bool = arg(
        True, "update each parameter as soon as its gradient is complete (not with grad_accum > 1 or clip global)"
    )
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
    if args.weights == "bf16" and args.precision == "fp32":
        raise UserError("weights bf16 computes in bf16: use precision bf16 with it")
    if args.method == "lora":
        lora_settings(args)
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


# --- the model and its trainable entries -------------------------------------------------

Chosen = list[tuple[str, torch.nn.Parameter, torch.Tensor | None]]


def lora_settings(args: TrainArgs) -> LoraSettings:
    return LoraSettings(args.lora_rank, args.lora_alpha, args.lora_dropout, tuple(args.lora_targets))


def load_for_training(args: TrainArgs, on: torch.device) -> torch.nn.Module:
    """The base model in the weight dtype, with activation checkpointing and LoRA adapters if asked."""
    dtype = torch.bfloat16 if args.weights == "bf16" else torch.float32
    model = load_model(args.model, dtype, args.trust_remote_code, on, args.attention)
    model.config.use_cache = False
    if args.activation_checkpointing:
        # Non-reentrant: works with frozen inputs (LoRA, LoTA) and with the in-backward updates.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if args.method == "lora":
        model = add_lora(model, lora_settings(args))
    if args.compile:
        compile_layers(model)
    model.train()
    return model


def compile_layers(model: torch.nn.Module) -> None:
    """torch.compile every decoder layer: one compiled graph serves all layers of a model."""
    layer_classes = set(getattr(model, "_no_split_modules", None) or [])
    layers = [module for module in model.modules() if type(module).__name__ in layer_classes]
    if not layers:
        raise UserError(f"{type(model).__name__} names no decoder layer class (_no_split_modules) to compile")
    for layer in layers:
        layer.compile()


def trainable_parameters(model: torch.nn.Module, method: str, mask_path: Path | None) -> Chosen:
    """(name, parameter, trainable flat indices or None for all); others get requires_grad False."""
    named = dict(model.named_parameters())
    if method == "fft":
        return [(name, p, None) for name, p in named.items()]
    if method == "lora":  # PEFT has frozen everything but the adapters
        return [(name, p, None) for name, p in named.items() if p.requires_grad]
    masks = load_mask(mask_path, {name: p.shape for name, p in named.items()})
    chosen = []
    for name, parameter in named.items():
        indices = masks[name].flatten().nonzero().squeeze(1) if name in masks else None
        if indices is None or indices.numel() == 0:
            parameter.requires_grad_(False)
        else:
            chosen.append((name, parameter, indices))
    return chosen


class CheckpointValues:
    """fp32 values of the base model's tensors, read from its checkpoint one tensor at a time."""

    def __init__(self, model_dir: Path):
        self.model_dir = model_dir

    def __call__(self, name: str) -> torch.Tensor:
        with TensorReader(checkpoint_files(self.model_dir)) as reader:
            if name not in reader:
                raise UserError(f"{name} is not in the checkpoint of {self.model_dir}; train with --weights fp32")
            return reader.get(name).float()


def make_updater(model: torch.nn.Module, args: TrainArgs) -> ParameterUpdater:
    chosen = trainable_parameters(model, args.method, args.mask)
    slots = make_slots(chosen, args.optimizer, args.lr, args.weight_decay, CheckpointValues(args.model))
    return ParameterUpdater(slots, args.clip, args.max_grad_norm, in_backward=updates_in_backward(args))


def updates_in_backward(args: TrainArgs) -> bool:
    """In-backward updates need each gradient final on arrival and clipped on its own."""
    return args.optimizer_in_backward and args.grad_accum == 1 and args.clip != "global"


def save_weights(path: Path, args: TrainArgs, model: torch.nn.Module, updater: ParameterUpdater) -> None:
    """fft: every parameter; lota: the sparse delta of the trained entries; lora: the adapter."""
    if args.method == "lora":
        save_lora_adapter(path, model, lora_settings(args))
    elif args.method == "fft":
        tensors = {slot.name: slot.master.detach().contiguous().cpu() for slot in updater.slots}
        save_file(tensors, str(path), metadata={"format": WEIGHTS_FORMAT})
    else:
        delta = {}
        with TensorReader(checkpoint_files(args.model)) as base:
            for slot in updater.slots:
                indices = slot.indices.cpu()
                delta[slot.name] = (indices, slot.master.cpu() - base.get(slot.name).view(-1)[indices])
        save_sparse_delta(path, delta, {slot.name: slot.parameter.shape for slot in updater.slots})


# --- the loop ---------------------------------------------------------------------------


def first_target_column(labels: torch.Tensor) -> int:
    """The first column holding a response token of any row (never 0: nothing predicts it)."""
    columns = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero()
    return int(columns[0]) + 1 if columns.numel() else labels.shape[1]


def response_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], trim_logits: bool) -> torch.Tensor:
    """Summed next-token cross-entropy over the response tokens (labels not IGNORE_INDEX).

    With `trim_logits`, logits are computed only from the first position that predicts a
    response token on: the prompt costs no output-layer work or logit memory.
    """
    labels = batch["labels"]
    first = first_target_column(labels) if trim_logits else 1
    # Positions as an index tensor, not a count: indexing copies the kept hidden states into a
    # contiguous tensor, where a slice would leave them strided, and a strided input to a frozen
    # output layer makes matmul expand the weight over the batch (a copy of it per sequence).
    positions = torch.arange(first - 1, labels.shape[1], device=labels.device)
    extra = {"logits_to_keep": positions} if trim_logits else {}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **extra).logits
    predictions = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(predictions, labels[:, first:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


@dataclass
class StepResult:
    loss: float  # mean over the step's response tokens
    target_tokens: int
    tokens: int
    grad_norm: float


def train_step(
    model: torch.nn.Module,
    updater: ParameterUpdater,
    batches: Sequence[dict[str, torch.Tensor]],
    precision: str,
    on: torch.device,
    trim_logits: bool,
) -> StepResult:
    """One optimizer step over the micro-batches `batches`."""
    # Every micro-batch's loss is divided by the step's response tokens, so that accumulation
    # gives the same mean as one large batch.
    target_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
    loss_sum, tokens = 0.0, 0
    for batch in batches:
        batch = {key: value.to(on) for key, value in batch.items()}
        with torch.autocast(on.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = response_loss(model, batch, trim_logits)
        (loss / target_tokens).backward()
        loss_sum += loss.item()
        tokens += int(batch["attention_mask"].sum())
    grad_norm = updater.step()
    return StepResult(loss_sum / target_tokens, target_tokens, tokens, grad_norm)


def optimizer_steps(n_examples: int, args: TrainArgs) -> list[list[tuple[float, list[int]]]]:
    """The micro-batches of each optimizer step, at most max_steps of them."""
    batches = list(micro_batches(n_examples, args.batch_size, args.epochs, args.seed))
    steps = [batches[start : start + args.grad_accum] for start in range(0, len(batches), args.grad_accum)]
    return steps[: args.max_steps] if args.max_steps else steps


def learning_rate(step: int, args: TrainArgs) -> float:
    """Linear warm-up over `warmup_steps` (step counts from 1), then constant."""
    return args.lr * min(1.0, step / args.warmup_steps) if args.warmup_steps else args.lr


def train(args: TrainArgs) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train as `args` say and write the run directory; return its summary and the trained model."""
    validate(args)
    torch.manual_seed(args.seed)
    threads = set_threads(args.threads)
    on = device()
    tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    examples = tokenize_records(read_jsonl(args.data, "training data"), tokenizer, args.max_length, args.data)
    model = load_for_training(args, on)
    updater = make_updater(model, args)
    trim_logits = accepts_logits_to_keep(model)
    steps = optimizer_steps(len(examples), args)
    log.info(
        "%s: %d examples, %d steps, %d trainable parameters, %s weights, updates %s, on %s (%d CPU threads)",
        args.method,
        len(examples),
        len(steps),
        updater.trainable_count,
        args.weights,
        "in the backward pass" if updater.in_backward else "after the backward pass",
        on,
        threads,
    )

    reset_peak_memory(on)
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        started = time.perf_counter()
        total_tokens, last_loss = 0, None
        with open(tmp / "log.jsonl", "w") as log_file:
            for step, micro in enumerate(tqdm(steps, desc=f"train {args.method}", unit="step"), start=1):
                step_started = time.perf_counter()
                lr = learning_rate(step, args)
                updater.set_lr(lr)
                batches = [collate([examples[i] for i in chunk], tokenizer.pad_token_id) for _, chunk in micro]
                result = train_step(model, updater, batches, args.precision, on, trim_logits)
                elapsed = time.perf_counter() - step_started
                total_tokens += result.tokens
                last_loss = result.loss
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
                }
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                log.info(
                    "step %d/%d loss %.4f lr %.2e tokens/s %.0f peak %.0f MB",
                    step,
                    len(steps),
                    result.loss,
                    lr,
                    record["tokens_per_s"],
                    record["peak_memory_mb"],
                )
        wall = time.perf_counter() - started
        updater.remove_hooks()
        save_weights(tmp / "weights.safetensors", args, model, updater)
        summary = {
            "method": args.method,
            "trainable_params": updater.trainable_count,
            "total_params": sum(p.numel() for p in model.parameters())
            - (updater.trainable_count if args.method == "lora" else 0),
            "examples": len(examples),
            "steps": len(steps),
            "tokens": total_tokens,
            "final_loss": last_loss,
            "train_wall_s": wall,
            "tokens_per_s": total_tokens / wall if wall else 0.0,
            "peak_memory_mb": peak_memory_mb(on),
            "optimizer_state_bytes": updater.state_bytes(),
            "updates_in_backward": updater.in_backward,
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
    """Fine-tune a causal LM densely (fft), through a sparse mask (lota), or with LoRA adapters (lora)."""
    train(args)


if __name__ == "__main__":
    run_main(TrainArgs, run)
