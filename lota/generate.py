"""Stage generate: completions for the evaluation records, as JSONL {id, prompt, completion, gold,
subtask}, by vLLM or a transformers decode loop (lota.evaluation.generation)."""

from __future__ import annotations

from lota.core.cli import run_main
from lota.core.io import write_jsonl
from lota.evaluation.generation import GenerateArgs, generate


def run(args: GenerateArgs) -> None:
    """Generate completions for evaluation prompts."""
    write_jsonl(args.out, generate(args))


if __name__ == "__main__":
    run_main(GenerateArgs, run)
