"""How an example becomes the text a model reads and learns to write: the prompt formats (the
tokenizer's chat template, lota's default, or the official LoTA code's plain-text, Alpaca and
Human/Assistant formats) and the target formats (the data's own, or the official code's answer marker).

The official strings are copied byte for byte from rlaif/preference_datasets.py of
github.com/kiddyboots216/lottery-ticket-adaptation, its indentation and trailing spaces included.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from lota.core.errors import UserError
from lota.tasks.gsm8k import OFFICIAL_ANSWER_MARKER

PROMPT_FORMATS = ("chat", "plain", "alpaca", "human_assistant")
TARGET_FORMATS = ("lota", "official")

# get_gsm8k: the question, then this instruction; no chat template, no BOS token.
OFFICIAL_MATH_INSTRUCTION = "\nAnswer the above question. First think step by step and then answer the final number.\n"


def _official_alpaca_prompt(indent: int) -> str:
    """The official Alpaca prompt (no input) as an indented triple-quoted f-string writes it: `indent`
    spaces before each section, and the trailing space after the first sentence."""
    spaces = " " * indent
    return (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request. \n"
        f"\n{spaces}### Instruction:\n{spaces}{{instruction}}\n\n{spaces}### Response:\n{spaces}"
    )


# Training (get_commonsense's generate_prompt) indents by 20 spaces, evaluation (get_default's, which
# eval_model_all.py reads every commonsense test set through) by 16: the official prompts differ.
OFFICIAL_ALPACA_TRAIN_PROMPT = _official_alpaca_prompt(20)
OFFICIAL_ALPACA_EVAL_PROMPT = _official_alpaca_prompt(16)
# get_sharegpt4 and generate_samples.py (AlpacaEval), for training and evaluation alike.
OFFICIAL_HUMAN_ASSISTANT_PROMPT = "Human: {instruction}\n\nAssistant: "


def format_prompt(
    question: str,
    tokenizer: PreTrainedTokenizerBase,
    prompt_format: str = "chat",
    require_chat_template: bool = False,
    training: bool = False,
) -> str:
    """The text the model is given for `question` (`training`: in a training record, else in one
    that is scored).

    chat: the tokenizer's chat template with a generation prompt (without one, "Question: ...
    Answer: " after the BOS token); plain: the official GSM8K format, the question and then the
    official instruction; alpaca: the official Alpaca format of its commonsense tasks, whose
    training and evaluation prompts differ in their indent; human_assistant: the official ShareGPT4
    and AlpacaEval format. A record's input, where it has one, is already part of the question
    (lota.tasks.with_input), so the Alpaca format is always the official one without an input section.
    """
    if prompt_format == "plain":
        return question + OFFICIAL_MATH_INSTRUCTION
    if prompt_format == "alpaca":
        template = OFFICIAL_ALPACA_TRAIN_PROMPT if training else OFFICIAL_ALPACA_EVAL_PROMPT
        return template.format(instruction=question)
    if prompt_format == "human_assistant":
        return OFFICIAL_HUMAN_ASSISTANT_PROMPT.format(instruction=question)
    if prompt_format != "chat":
        raise UserError(f"prompt format must be one of {', '.join(PROMPT_FORMATS)}, got {prompt_format!r}")
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    if require_chat_template:
        raise UserError(
            f"the tokenizer of {tokenizer.name_or_path} has no chat template (require_chat_template is set)"
        )
    return f"{tokenizer.bos_token or ''}Question: {question}\nAnswer: "


def format_target(response: str, target_format: str = "lota") -> str:
    """The response the model learns: the data's own, or the official code's, whose GSM8K target
    replaces '####' with "The final answer is: " (so "#### 72" becomes "The final answer is:  72",
    two spaces, as there). Responses without '####' are the same in both."""
    if target_format == "official":
        return response.replace("####", OFFICIAL_ANSWER_MARKER)
    if target_format != "lota":
        raise UserError(f"target format must be one of {', '.join(TARGET_FORMATS)}, got {target_format!r}")
    return response
