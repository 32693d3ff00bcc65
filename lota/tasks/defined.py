"""Tasks declared in the config (`tasks.<name>.define`): a researcher's own data, read from JSON Lines
or JSON files, with a prompt, a response and a gold answer taken from each record's fields, and one
of the built-in scorers.

    tasks:
      capitals:
        train_size: 200
        define:
          train: my_data/capitals_train.jsonl     # optional: without it the task is evaluation-only
          valid: my_data/capitals_valid.jsonl     # optional: else carved from the training records
          test: my_data/capitals_test.jsonl
          prompt: "What is the capital of {country}?"   # a field's name, or a template over fields
          response: capital                       # the target text; default: gold
          gold: capital                           # what the scorer compares; default: response
          scorer: exact_match

Paths are relative to the working directory. A template names fields in braces (`{{` and `}}` are
literal braces); a bare name is one field's value. Every record is checked when read, and a missing
field or an answer the scorer cannot read stops with one line naming the file, the record and the key.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lota.core.errors import UserError
from lota.core.io import read_jsonl
from lota.tasks import Example, Task, commonsense, gsm8k, read_json_records

SPLITS = ("train", "valid", "test")
TEXT_KEYS = ("prompt", "response", "gold")
# A defined task's lengths unless its task settings give max_length / max_new_tokens.
MAX_LENGTH, MAX_NEW_TOKENS = 512, 256
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalization (its official evaluate-v1.1.py): lower case, no punctuation, no
    articles, single spaces. Hand-written: six lines, where the libraries that ship it (evaluate,
    lm-eval) are optional extras here."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def score_exact_match(completion: str, gold: str) -> bool:
    return normalize_answer(completion) == normalize_answer(gold)


def score_last_number(completion: str, gold: str) -> bool:
    predicted = gsm8k.last_number(completion)
    return predicted is not None and predicted == gsm8k.parse_number(gold)


def choice_scorer(labels: tuple[str, ...]) -> Callable[[str, str], bool]:
    """With labels, the first of them the completion names as a whole word (case counts, so that
    labels A-D are not read in 'a'), against the gold label; without, the LoTA paper's labels
    (answerN, optionN, solutionN, endingN, true/false) read as its commonsense tasks read them."""
    if not labels:
        return commonsense.score
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, sorted(labels, key=len, reverse=True))) + r")(?!\w)")

    def score(completion: str, gold: str) -> bool:
        found = pattern.search(completion)
        return found is not None and found.group() == gold

    return score


# The scorers a defined task may name (none: generation only, nothing scored).
SCORERS = ("exact_match", "last_number", "gsm8k_marker", "choice_label", "none")


def template_fields(template: str, key: str) -> list[str]:
    """The record fields a prompt, response or gold setting reads: the names in a template's braces,
    or the setting itself when it has none. A UserError names the config key of a malformed one."""
    if "{" not in template and "}" not in template:
        return [template]
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as error:
        raise UserError(f"config key {key}: {error} in {template!r}") from None
    fields = []
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if not re.fullmatch(r"[^\s.\[\]{}!:]+", field) or spec or conversion:
            raise UserError(f"config key {key}: {{{field}}} must name a field plainly, as {{question}}")
        fields.append(field)
    if not fields:
        raise UserError(f"config key {key}: the template {template!r} names no field")
    return fields


def render(template: str, record: dict[str, Any]) -> str:
    if "{" not in template and "}" not in template:
        return str(record[template])
    return template.format_map({field: record[field] for field in template_fields(template, "")})


class DefinedTask:
    """A task declared under config key tasks.<name>.define, checked on construction."""

    def __init__(self, name: str, definition: Mapping[str, Any]):
        self.name, self.key = name, f"tasks.{name}.define"
        unknown = sorted(set(definition) - {*SPLITS, *TEXT_KEYS, "scorer", "labels"})
        if unknown:
            raise UserError(f"config key {self.key}: unknown key {unknown[0]!r}")
        if "test" not in definition:
            raise UserError(f"config key {self.key}.test: a defined task needs its test file")
        self.files = {split: Path(definition[split]) for split in SPLITS if definition.get(split)}
        for split, path in self.files.items():
            if path.suffix not in (".jsonl", ".json"):
                raise UserError(f"config key {self.key}.{split}: {path} must be a .jsonl or .json file")
        if "prompt" not in definition:
            raise UserError(f"config key {self.key}.prompt: name the field (or template) of the prompt")
        if not (definition.get("response") or definition.get("gold")):
            raise UserError(f"config key {self.key}: give response, gold or both (each defaults to the other)")
        self.prompt = definition["prompt"]
        self.response = definition.get("response") or definition["gold"]
        self.gold = definition.get("gold") or definition["response"]
        self.scorer = definition.get("scorer", "exact_match")
        if self.scorer not in SCORERS:
            raise UserError(f"config key {self.key}.scorer: one of {', '.join(SCORERS)}, got {self.scorer!r}")
        self.labels = tuple(map(str, definition.get("labels") or ()))
        if self.labels and self.scorer != "choice_label":
            raise UserError(f"config key {self.key}.labels: only the choice_label scorer reads labels")
        # The fields each setting the config gives reads, under that setting's key.
        self.fields = {
            key: template_fields(definition[key], f"{self.key}.{key}") for key in TEXT_KEYS if definition.get(key)
        }

    def score_function(self) -> Callable[[str, str], bool] | None:
        return {
            "exact_match": score_exact_match,
            "last_number": score_last_number,
            "gsm8k_marker": gsm8k.score,
            "choice_label": choice_scorer(self.labels),
            "none": None,
        }[self.scorer]

    def load(self, split: str, data_dir: Path | None) -> list[dict[str, Any]]:
        """A split's records, each checked to have the fields the settings read and a gold answer the
        scorer can read. data_dir is not used: the definition names its files."""
        if split not in self.files:
            raise UserError(f"task {self.name} has no {split} split (config key {self.key}.{split})")
        path = self.files[split]
        what = f"task {self.name} {split} data"
        records = read_jsonl(path, what) if path.suffix == ".jsonl" else read_json_records(path, what)
        for number, record in enumerate(records, start=1):
            for key, fields in self.fields.items():
                missing = next((field for field in fields if field not in record), None)
                if missing is not None:
                    raise UserError(f"{path}: record {number} lacks the field {missing!r} ({self.key}.{key})")
            self.check_gold(render(self.gold, record), f"{path}: record {number}")
        return records

    def check_gold(self, gold: str, where: str) -> None:
        answer = self.gold_answer(gold)
        if not answer:
            raise UserError(f"{where}: the gold answer is empty ({self.key}.gold)")
        if self.scorer in ("last_number", "gsm8k_marker") and gsm8k.parse_number(answer) is None:
            raise UserError(f"{where}: the gold answer {answer[-40:]!r} is not a number ({self.key}.gold)")
        if self.scorer == "choice_label":
            if not (answer in self.labels if self.labels else commonsense.LABEL.fullmatch(answer)):
                named = ", ".join(self.labels) if self.labels else "answerN, optionN, solutionN, true or false"
                raise UserError(f"{where}: the gold answer {answer!r} is not a label ({named}; {self.key}.gold)")

    def gold_answer(self, gold: str) -> str:
        """The answer the scorer compares: GSM8K-style golds keep the number after '####'."""
        return gsm8k.gold_answer(gold) if self.scorer == "gsm8k_marker" and "####" in gold else gold.strip()

    def to_example(self, record: dict[str, Any]) -> Example:
        return Example(
            question=render(self.prompt, record).strip(),
            response=render(self.response, record).strip(),
            gold=self.gold_answer(render(self.gold, record)),
            subtask=self.name,
        )

    def task(self) -> Task:
        return Task(
            name=self.name,
            load=self.load,
            to_example=self.to_example,
            score=self.score_function(),
            max_length=MAX_LENGTH,
            max_new_tokens=MAX_NEW_TOKENS,
            splits=tuple(self.files),
        )


def parse_task_definitions(text: str) -> dict[str, dict[str, Any]]:
    """The --task-definitions option: a JSON object of task name to definition ('' for none)."""
    if not text:
        return {}
    try:
        definitions = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"--task-definitions is not valid JSON: {error}") from None
    if not isinstance(definitions, dict) or not all(isinstance(value, dict) for value in definitions.values()):
        raise UserError("--task-definitions must be a JSON object of task name to definition")
    return definitions
