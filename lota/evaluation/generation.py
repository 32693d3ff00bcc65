"""Generating completions for evaluation records, as {id, prompt, completion, gold, subtask}.

Backends: vLLM when it is installed and a GPU is present (backend 'auto'), else a batched decode
loop over a transformers model and its KV cache, prompts of similar length batched together,
each row leaving the batch when it ends. Greedy by default; temperature > 0 samples (with
top_p), seeded.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from lota.core.cli import arg, check_minimums, check_range, threads_arg, trust_remote_code_arg
from lota.core.errors import UserError
from lota.core.io import read_jsonl
from lota.core.modeling import device, inference_dtype, load_model, load_tokenizer, set_threads
from lota.training.losses import accepts_logits_to_keep

# Logged under the stage's name: generation runs in the generate stage (and in preference_data).
log = logging.getLogger("lota.generate")


@dataclass
class GenerateArgs:
    model: Path = arg(help="HF model directory")
    data: Path = arg(help="evaluation records (JSONL with id, prompt, gold)")
    out: Path = arg(help="output samples JSONL")
    backend: Literal["auto", "transformers", "vllm"] = arg(
        "auto", "auto: vllm if installed and a GPU is present, else transformers"
    )
    batch_size: int = arg(16, "prompts per batch (transformers backend)")
    max_new_tokens: int = arg(256, "tokens generated at most per prompt")
    temperature: float = arg(0.0, "0 is greedy; above 0 samples")
    top_p: float = arg(1.0, "nucleus sampling threshold when sampling")
    top_k: int = arg(0, "sampling keeps the k most likely tokens (0: all)")
    seed: int = arg(0, "sampling seed")
    threads: int = threads_arg()
    trust_remote_code: bool = trust_remote_code_arg()


def choose_backend(requested: str) -> str:
    vllm_installed = importlib.util.find_spec("vllm") is not None
    if requested == "auto":
        return "vllm" if vllm_installed and torch.cuda.is_available() else "transformers"
    if requested == "vllm" and not vllm_installed:
        raise UserError("generation backend 'vllm' requested but vllm is not installed (pip install '.[vllm]')")
    if requested == "vllm" and not torch.cuda.is_available():
        raise UserError("generation backend 'vllm' requested but no GPU is available")
    return requested


def token_picker(args: GenerateArgs) -> Callable[[torch.Tensor], torch.Tensor]:
    """The next token of each row from its last logits: the argmax, or a seeded sample after
    transformers' own temperature, top-k and top-p warpers, in generate's order."""
    if args.temperature == 0:
        return lambda logits: logits.argmax(-1)
    top_k = [TopKLogitsWarper(args.top_k)] if args.top_k else []
    warpers = LogitsProcessorList([TemperatureLogitsWarper(args.temperature), *top_k, TopPLogitsWarper(args.top_p)])
    generator = torch.Generator().manual_seed(args.seed)

    def sample(logits: torch.Tensor) -> torch.Tensor:
        probabilities = warpers(None, logits.float()).softmax(-1).cpu()
        return torch.multinomial(probabilities, 1, generator=generator).squeeze(1).to(logits.device)

    return sample


def cache_keyword(model: torch.nn.Module) -> str:
    """The name of the KV cache in the model's forward and output: transformers 5.2x renamed
    `past_key_values` to `cache`, and vLLM's GPU extra holds transformers below 5.20."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def decode(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    max_new_tokens: int,
    eos_token_id: int,
    pick: Callable[[torch.Tensor], torch.Tensor],
) -> list[list[int]]:
    """The new tokens of each row of a left-padded batch, up to and including its end-of-sequence.

    Written here rather than calling transformers' generate, which keeps a finished row in the
    batch until the last row ends: here a row leaves the batch and the KV cache as soon as it
    ends, so it costs no more work (a quarter of the decode work on the default GSM8K prompts)."""
    attention_mask = batch["attention_mask"]
    positions = (attention_mask.cumsum(1) - 1).clamp(min=0)  # left padding: each row's own positions
    keep_last = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    output = model(**batch, position_ids=positions, use_cache=True, **keep_last)
    cache_name = cache_keyword(model)
    cache, position = output[cache_name], positions[:, -1:]
    new_tokens: list[list[int]] = [[] for _ in range(len(attention_mask))]
    rows = list(range(len(attention_mask)))  # the batch's rows still generating
    while True:
        next_ids = pick(output.logits[:, -1])
        for row, token in zip(rows, next_ids.tolist(), strict=True):
            new_tokens[row].append(token)
        going = [i for i, row in enumerate(rows) if new_tokens[row][-1] != eos_token_id]
        if len(new_tokens[rows[0]]) == max_new_tokens or not going:
            return new_tokens
        if len(going) < len(rows):
            kept = torch.tensor(going, device=attention_mask.device)
            cache.batch_select_indices(kept)
            attention_mask, position, next_ids = attention_mask[kept], position[kept], next_ids[kept]
            rows = [rows[i] for i in going]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], dim=1)
        position = position + 1
        output = model(
            input_ids=next_ids[:, None],
            attention_mask=attention_mask,
            position_ids=position,
            use_cache=True,
            **{cache_name: cache},
        )


def generate_transformers(args: GenerateArgs, prompts: list[str]) -> list[str]:
    tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    tokenizer.padding_side = "left"
    on = device()
    model = load_model(args.model, inference_dtype(on), args.trust_remote_code, on).eval()
    pick = token_picker(args)
    # Prompts of similar length share a batch, so little padding is generated over.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    completions: list[str] = [""] * len(prompts)
    for start in tqdm(range(0, len(order), args.batch_size), desc="generate", unit="batch"):
        chosen = order[start : start + args.batch_size]
        batch = tokenizer([prompts[i] for i in chosen], return_tensors="pt", padding=True, add_special_tokens=False).to(
            on
        )
        with torch.inference_mode():
            new_tokens = decode(model, batch, args.max_new_tokens, tokenizer.eos_token_id, pick)
        for i, text in zip(chosen, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True):
            completions[i] = text
    return completions


def generate_vllm(args: GenerateArgs, prompts: list[str]) -> list[str]:
    from vllm import LLM, SamplingParams

    tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    llm = LLM(model=str(args.model), seed=args.seed, trust_remote_code=args.trust_remote_code, dtype="bfloat16")
    params = SamplingParams(
        temperature=args.temperature,
        top_p=args.top_p if args.temperature > 0 else 1.0,
        **({"top_k": args.top_k} if args.top_k and args.temperature > 0 else {}),
        max_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    # Token ids, not text, so that vLLM adds no special tokens the chat template already holds.
    requests = [{"prompt_token_ids": tokenizer(p, add_special_tokens=False).input_ids} for p in prompts]
    return [result.outputs[0].text for result in llm.generate(requests, params)]


def generate(args: GenerateArgs) -> list[dict[str, Any]]:
    check_range("temperature", args.temperature, 0.0, 100.0)
    check_range("top_p", args.top_p, 0.0, 1.0)
    check_minimums(args, {"batch_size": 1, "max_new_tokens": 1, "top_k": 0})
    records = read_jsonl(args.data, "evaluation data")
    for number, record in enumerate(records, start=1):
        if not isinstance(record.get("prompt"), str) or "gold" not in record:
            raise UserError(f"{args.data}: record {number} needs a string 'prompt' and a 'gold'")
    backend = choose_backend(args.backend)
    set_threads(args.threads)
    started = time.perf_counter()
    prompts = [record["prompt"] for record in records]
    completions = (generate_vllm if backend == "vllm" else generate_transformers)(args, prompts)
    seconds = time.perf_counter() - started
    log.info("%s: %d completions in %.1f s", backend, len(completions), seconds)
    return [
        {
            "id": record.get("id", number),
            "prompt": record["prompt"],
            "completion": completion,
            "gold": record["gold"],
            "subtask": record.get("subtask", ""),
            "backend": backend,
        }
        for number, (record, completion) in enumerate(zip(records, completions, strict=True))
    ]
