"""AlpacaEval's judges, for the alpaca_eval stage (lota.alpaca_eval): the model's outputs paired with
the reference outputs of the same instructions, and the judge that prefers one of each pair.

- any alpaca-eval annotator config, by name or path; the default,
  `weighted_alpaca_eval_gpt4_turbo` (AlpacaEval 2), calls the OpenAI API and needs a key, checked
  before the first call;
- `local`: the same AlpacaEval 2 prompt and preference on a local causal LM. alpaca-eval's own
  local decoder fails on transformers 5 (it passes `load_in_8bit` to the model), so this one plugs
  in its own: the log-probabilities of m and M (the two outputs' names in the prompt) as the
  judge's first answer token, which alpaca-eval turns into the preference as it does the API
  judge's logprobs (P(m) / (P(m) + P(M)) for the output shown as m).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from lota.core.errors import UserError
from lota.core.modeling import device, inference_dtype, load_model, load_tokenizer

# Logged under the stage's name: the alpaca_eval stage judges.
log = logging.getLogger("lota.alpaca_eval")

LOCAL_JUDGE = "local"
LOCAL_JUDGE_NAME = "weighted_alpaca_eval_local"

# AlpacaEval 2's judge: its prompt names the two outputs m and M, and the preference is read
# from the probabilities of those tokens.
JUDGE_PROMPT = "alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt"
JUDGE_TOKENS = ("m", "M")

# The credentials each API decoder of alpaca-eval reads from the environment.
API_KEYS = {
    "openai_completions": ("OpenAI", ("OPENAI_API_KEY", "OPENAI_API_KEYS")),
    "anthropic_completions": ("Anthropic", ("ANTHROPIC_API_KEY",)),
    "google_completions": ("Google", ("GOOGLE_API_KEY",)),
    "cohere_completions": ("Cohere", ("COHERE_API_KEY",)),
}


def import_alpaca_eval() -> str:
    """alpaca-eval's version, once it imports (it needs pkg_resources, and pandas < 3 for its cache)."""
    try:
        import alpaca_eval
    except ImportError as error:
        raise UserError(
            f"alpaca-eval cannot be imported ({error}): pip install -e '.[eval]' (pins setuptools<81 and pandas<3)"
        ) from None
    return alpaca_eval.__version__


class LocalJudge:
    """alpaca-eval's `fn_completions` for a local causal LM: per ChatML prompt, the log-probabilities
    of the tokens m and M as the judge's first answer token, in the OpenAI logprobs layout that
    alpaca-eval's `logprob_parser` reads."""

    def __init__(self, model_dir: Path, trust_remote_code: bool = False):
        self.tokenizer = load_tokenizer(model_dir, trust_remote_code)
        if not self.tokenizer.chat_template:
            raise UserError(f"the judge model {model_dir} has no chat template to format the judge's prompt")
        self.token_ids = []
        for token in JUDGE_TOKENS:
            ids = self.tokenizer.encode(token, add_special_tokens=False)
            if len(ids) != 1:
                raise UserError(f"the judge model's tokenizer splits the answer {token!r} into {len(ids)} tokens")
            self.token_ids.append(ids[0])
        self.on = device()
        self.model = load_model(model_dir, inference_dtype(self.on), trust_remote_code, self.on).eval()

    def answer_logprobs(self, prompt: str) -> list[float]:
        from alpaca_eval.utils import prompt_to_chatml

        text = self.tokenizer.apply_chat_template(prompt_to_chatml(prompt), tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids.to(self.on)
        with torch.inference_mode():
            logits = self.model(ids).logits[0, -1].float()
        return torch.log_softmax(logits, dim=-1)[self.token_ids].tolist()

    def __call__(self, prompts: Sequence[str], **_: Any) -> dict[str, list[Any]]:
        completions, scored, seconds = [], [], []
        for prompt in tqdm(prompts, desc="judge", unit="pair"):
            started = time.perf_counter()
            logprobs = self.answer_logprobs(prompt)
            top = [{"token": token, "logprob": value} for token, value in zip(JUDGE_TOKENS, logprobs, strict=True)]
            completions.append(max(top, key=lambda entry: entry["logprob"])["token"])
            scored.append({"logprobs": {"content": [{"top_logprobs": top}]}})
            seconds.append(time.perf_counter() - started)
        return {
            "completions": completions,
            "completions_all": scored,
            "price_per_example": [0.0] * len(prompts),
            "time_per_example": seconds,
        }


def local_judge_config(folder: Path) -> Path:
    """An annotator config for the local judge: AlpacaEval 2's weighted judge without its API decoder."""
    from alpaca_eval import constants

    config = {
        LOCAL_JUDGE_NAME: {
            "prompt_template": str(constants.EVALUATORS_CONFIG_DIR / JUDGE_PROMPT),
            "fn_completion_parser": "logprob_parser",
            "completion_parser_kwargs": {
                "numerator_token": JUDGE_TOKENS[0],
                "denominator_tokens": list(JUDGE_TOKENS),
                "is_binarize": False,
            },
            "completion_key": "completions_all",
            "batch_size": 1,
        }
    }
    path = folder / LOCAL_JUDGE_NAME / "configs.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(config))
    return path


def check_api_judge(judge: str) -> None:
    """Stop before any work when an API judge's credentials are not set."""
    from alpaca_eval import constants
    from alpaca_eval.utils import load_configs

    try:
        configs = load_configs(judge, relative_to=constants.EVALUATORS_CONFIG_DIR)
    except (OSError, AssertionError):
        raise UserError(f"unknown AlpacaEval judge {judge!r} (config key alpaca_eval.judge)") from None
    for config in configs.values():
        provider, variables = API_KEYS.get(config.get("fn_completions"), (None, ()))
        openai_file = provider == "OpenAI" and Path(constants.OPENAI_CLIENT_CONFIG_PATH).is_file()
        if provider and not openai_file and not any(os.environ.get(variable) for variable in variables):
            raise UserError(
                f"AlpacaEval judge {judge!r} calls the {provider} API: set {variables[0]}, "
                f"or judge offline with alpaca_eval.judge: {LOCAL_JUDGE}"
            )


def paired_outputs(
    samples: list[dict[str, Any]], references: list[dict[str, Any]], source: Path, name: str
) -> tuple[list[int], list[dict[str, Any]], list[dict[str, Any]]]:
    """(ids, reference outputs, model outputs) in sample order, each sample matched by its id."""
    ids, reference_outputs, model_outputs = [], [], []
    for number, sample in enumerate(samples, start=1):
        index = sample.get("id")
        if not isinstance(sample.get("completion"), str) or not isinstance(index, int):
            raise UserError(f"{source}: sample {number} needs an integer 'id' and a string 'completion'")
        if not 0 <= index < len(references):
            raise UserError(f"{source}: sample {number} has id {index}, not one of the {len(references)} instructions")
        instruction, reference = references[index]["instruction"], references[index]["output"]
        ids.append(index)
        reference_generator = references[index].get("generator", "reference")
        reference_outputs.append({"instruction": instruction, "output": reference, "generator": reference_generator})
        model_outputs.append({"instruction": instruction, "output": sample["completion"].strip(), "generator": name})
    return ids, reference_outputs, model_outputs


def length_controlled(annotations: Any) -> dict[str, Any]:
    """alpaca-eval's length-controlled win rate, or why there is none (its GLM reads a hub table)."""
    from alpaca_eval.metrics import get_length_controlled_winrate

    try:
        figures = get_length_controlled_winrate(annotations, save_weights_dir=None, is_add_glm_preference_inplace=False)
    except OSError as error:  # huggingface_hub's offline, connection and HTTP errors are all OSErrors
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        log.warning("no length-controlled win rate: %s", first_line)
        return {"length_controlled_winrate": None, "lc_standard_error": None, "length_controlled_error": first_line}
    return {key: float(figures[key]) for key in ("length_controlled_winrate", "lc_standard_error")}
