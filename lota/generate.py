"""Stage generate: completions for the evaluation records, as JSONL {id, prompt, completion, gold, subtask}.

Backends: vLLM when it is installed and a GPU is present (backend 'auto'), else transformers
batched generation. Greedy by default; temperature > 0 samples (with top_p), seeded.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from lota.cli import arg, check_minimums, check_range, run_main, threads_arg, trust_remote_code_arg
from lota.errors import UserError
from lota.io import read_jsonl, write_jsonl
from lota.modeling import device, inference_dtype, load_model, load_tokenizer, set_threads

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


def generate_transformers(args: GenerateArgs, prompts: list[str]) -> list[str]:
    tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    tokenizer.padding_side = "left"
    on = device()
    model = load_model(args.model, inference_dtype(on), args.trust_remote_code, on).eval()
    sampling = (
        {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p}
        if args.temperature > 0
        else {"do_sample": False}
    )
    # Prompts of similar length share a batch, so little padding is generated over.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    completions: list[str] = [""] * len(prompts)
    torch.manual_seed(args.seed)
    for start in tqdm(range(0, len(order), args.batch_size), desc="generate", unit="batch"):
        chosen = order[start : start + args.batch_size]
        batch = tokenizer([prompts[i] for i in chosen], return_tensors="pt", padding=True, add_special_tokens=False).to(
            on
        )
        with torch.inference_mode():
            output = model.generate(
                **batch,
                max_new_tokens=args.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
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
        max_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    # Token ids, not text, so that vLLM adds no special tokens the chat template already holds.
    requests = [{"prompt_token_ids": tokenizer(p, add_special_tokens=False).input_ids} for p in prompts]
    return [result.outputs[0].text for result in llm.generate(requests, params)]


def generate(args: GenerateArgs) -> list[dict[str, Any]]:
    check_range("temperature", args.temperature, 0.0, 100.0)
    check_range("top_p", args.top_p, 0.0, 1.0)
    check_minimums(args, {"batch_size": 1, "max_new_tokens": 1})
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


def run(args: GenerateArgs) -> None:
    """Generate completions for evaluation prompts."""
    write_jsonl(args.out, generate(args))


if __name__ == "__main__":
    run_main(GenerateArgs, run)
