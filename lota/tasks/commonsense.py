"""The commonsense suite of the LoTA paper's continual-learning experiments, one task per
dataset, plus two that evaluate every test set: `commonsense`, trained on the four training sets
here mixed, and `commonsense_170k`, trained on the official one (LLM-Adapters' commonsense_170k,
all eight datasets). HellaSwag joins the evaluation where its data is present (its folder in the
local data folder; always from the hub).

Records use the paper's format: an instruction that lists the choices and the answer format,
the target "the correct answer is answer2", and the gold label. Hub records are converted into
the same format, so local and hub data give identical prompts.

lota scores a completion by the first label of the dataset's kind it names (answerN, solutionN,
optionN, or true/false), read as a whole word with case ignored, compared exactly with the gold
one: lota's own, lenient reading. `official_score` is the official LoTA code's reading instead:
the first such label found case-sensitively as a substring ("untrue" names true) in the text
after the last "### Response:".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lota.core.errors import UserError
from lota.tasks import Example, Task, read_json_records, require_fields, with_input

LABEL = re.compile(r"(?:answer[1-5]|solution[12]|option[12]|ending[1-4]|true|false)")
# The official code's label families (extract_answer_commonsense), chosen there by dataset name
# and here, without one, by the gold label's kind: its label without the number.
_OFFICIAL_LABELS = {
    "true": "true|false",
    "false": "true|false",
    "solution": "solution1|solution2",
    "answer": "answer1|answer2|answer3|answer4|answer5",
    "ending": "ending1|ending2|ending3|ending4",
    "option": "option1|option2",
}
# The end of the official Alpaca prompt: the official code reads only the text after it.
OFFICIAL_RESPONSE_MARKER = "### Response:"
MAX_LENGTH, MAX_NEW_TOKENS = 320, 16


def label_pattern(gold: str) -> re.Pattern[str]:
    """The labels of the gold label's dataset as whole words: true/false, or answerN, solutionN, optionN, endingN."""
    family = "true|false" if gold in ("true", "false") else rf"{gold.rstrip('0123456789')}\d"
    return re.compile(rf"\b(?:{family})\b")


def extract_label(completion: str, gold: str) -> str | None:
    """The first label of the gold label's kind the completion names as a whole word, case ignored
    ('The correct answer is Answer2.' -> answer2): lota's own reading. The official code's
    (`official_label`) is case-sensitive and finds labels within words."""
    found = label_pattern(gold).search(completion.lower())
    return found.group() if found else None


def score(completion: str, gold: str) -> bool:
    return extract_label(completion, gold) == gold


def official_label(text: str, gold: str) -> str:
    """The official code's reading (extract_answer_commonsense): with commas removed, the first
    label of the gold label's family found case-sensitively, within words too, after the last
    OFFICIAL_RESPONSE_MARKER (in the whole text, prompt included, when there is none); "" if none."""
    response = text.replace(",", "").split(OFFICIAL_RESPONSE_MARKER)[-1]
    found = re.search(_OFFICIAL_LABELS[gold.rstrip("0123456789")], response)
    return found.group() if found else ""


def official_score(text: str, gold: str) -> bool:
    """The official accuracy: the label read equals the gold one (the official code reads its
    target, "the correct answer is answer2", the same way, which gives the gold label)."""
    return official_label(text, gold) == gold


def choice_record(instruction: str, label: str) -> dict[str, str]:
    return {"instruction": instruction, "input": "", "output": f"the correct answer is {label}", "answer": label}


def multiple_choice(
    question: str,
    choices: list[str],
    answer_index: int,
    word: str = "Answer",
    request: str = "Please choose the correct answer to the question",
) -> dict[str, str]:
    listed = " ".join(f"{word}{number}: {choice}" for number, choice in enumerate(choices, start=1))
    labels = "/".join(f"{word.lower()}{number}" for number in range(1, len(choices) + 1))
    instruction = f"{request}: {question}\n\n{listed}\n\nAnswer format: {labels}"
    return choice_record(instruction, f"{word.lower()}{answer_index + 1}")


_LISTED = re.compile(
    r"Please choose the correct answer to the question: (?P<question>.*)\n\n"
    r"Answer1: (?P<listed>.*)\n\nAnswer format: answer1(?:/answer\d)+",
    re.DOTALL,
)


def parse_multiple_choice(record: dict[str, Any]) -> tuple[str, list[str], int]:
    """(question, choices, answer index) of a record `multiple_choice` wrote, checked by rebuilding it."""
    instruction, answer = require_fields(record, ("instruction", "answer"), "multiple-choice")
    match = _LISTED.fullmatch(instruction)
    if match and re.fullmatch(r"answer[1-9]", str(answer)):
        question, choices, index = match["question"], re.split(r" Answer[2-9]: ", match["listed"]), int(answer[6:]) - 1
        rebuilt = multiple_choice(question, choices, index) if index < len(choices) else None
        if rebuilt == {key: record.get(key) for key in rebuilt or ()}:
            return question, choices, index
    raise UserError(f"record is not a multiple-choice question in the LoTA paper's format: {instruction[:60]!r}")


def from_lettered(question: str, choices: dict[str, list[str]], key: str) -> dict[str, str]:
    """ARC and OpenBookQA on the hub: choices {text, label} and an answerKey among the labels."""
    return multiple_choice(question, choices["text"], choices["label"].index(key))


def from_arc(record: dict[str, Any]) -> dict[str, str]:
    return from_lettered(*require_fields(record, ("question", "choices", "answerKey"), "ARC hub"))


def from_openbookqa(record: dict[str, Any]) -> dict[str, str]:
    return from_lettered(*require_fields(record, ("question_stem", "choices", "answerKey"), "OpenBookQA hub"))


def from_boolq(record: dict[str, Any]) -> dict[str, str]:
    question, answer = require_fields(record, ("question", "answer"), "BoolQ hub")
    instruction = (
        f"Please answer the following question with true or false, question: {question}?\n\nAnswer format: true/false"
    )
    return choice_record(instruction, "true" if answer else "false")


def from_piqa(record: dict[str, Any]) -> dict[str, str]:
    goal, first, second, label = require_fields(record, ("goal", "sol1", "sol2", "label"), "PIQA hub")
    instruction = (
        f"Please choose the correct solution to the question: {goal}\n\nSolution1: {first}\n\nSolution2: {second}"
        "\n\nAnswer format: solution1/solution2"
    )
    return choice_record(instruction, f"solution{int(label) + 1}")


def from_social_i_qa(record: dict[str, Any]) -> dict[str, str]:
    fields = ("context", "question", "answerA", "answerB", "answerC", "label")
    context, question, *choices, label = require_fields(record, fields, "Social IQa hub")
    return multiple_choice(f"{context} {question}", choices, int(label) - 1)


def from_winogrande(record: dict[str, Any]) -> dict[str, str]:
    sentence, first, second, answer = require_fields(record, ("sentence", "option1", "option2", "answer"), "WinoGrande")
    instruction = (
        "Please choose the correct answer to fill in the blank to complete the given sentence: "
        f"{sentence}\n\nOption1: {first} Option2: {second} Answer format: option1/option2"
    )
    return choice_record(instruction, f"option{answer}")


def from_hellaswag(record: dict[str, Any]) -> dict[str, str]:
    """LLM-Adapters' HellaSwag format (the official code's copy): the activity, the context as the
    hub writes it, and four endings. Inferred from its files, which match the hub's validation
    records in order; LLM-Adapters ships no conversion script."""
    fields = ("activity_label", "ctx", "endings", "label")
    activity, context, endings, label = require_fields(record, fields, "HellaSwag hub")
    request = "Please choose the correct ending to complete the given sentence"
    return multiple_choice(f"{activity}: {context}", list(endings), int(label), "Ending", request)


@dataclass(frozen=True)
class Source:
    """Where a dataset lives: its local folder name, and its hub id, config, split names and converter.
    An optional one joins the combined tasks only where its data is present."""

    name: str
    hub_id: str
    hub_config: str | None
    hub_splits: dict[str, str]
    from_hub: Callable[[dict[str, Any]], dict[str, str]]
    optional: bool = False


# Test sets without public labels are replaced by the validation split, as the paper's code does.
SOURCES = (
    Source("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", {"train": "train", "test": "test"}, from_arc),
    Source("arc_easy", "allenai/ai2_arc", "ARC-Easy", {"train": "train", "test": "test"}, from_arc),
    Source("boolq", "google/boolq", None, {"train": "train", "test": "validation"}, from_boolq),
    Source("openbookqa", "allenai/openbookqa", "main", {"train": "train", "test": "test"}, from_openbookqa),
    Source("piqa", "ybisk/piqa", None, {"test": "validation"}, from_piqa),
    Source("social_i_qa", "allenai/social_i_qa", None, {"test": "validation"}, from_social_i_qa),
    Source("winogrande", "allenai/winogrande", "winogrande_xl", {"test": "validation"}, from_winogrande),
    Source("hellaswag", "Rowan/hellaswag", None, {"train": "train", "test": "validation"}, from_hellaswag, True),
)
COMBINED = "commonsense"
# The official training set: LLM-Adapters' ft-training_set/commonsense_170k.json, records in the
# paper's format (instruction, input, output, answer) drawn from all eight datasets; the hub copy's
# records are in it too, so its converter only copies them.
OFFICIAL_TRAINING = Source("commonsense_170k", "zwhe99/commonsense_170k", None, {"train": "train"}, dict)
OFFICIAL_TRAINING_FILE = "commonsense_170k.json"


def load_source(source: Source, split: str, data_dir: Path | None, file: str = "") -> list[dict[str, Any]]:
    """A dataset's records of a split, from <data_dir>/<name>/<split>.json (or `file` there), else the hub."""
    if split not in source.hub_splits:
        raise UserError(f"task {source.name} is evaluation-only: it has no {split} split")
    if data_dir is not None:
        path = Path(data_dir) / source.name / (file or f"{split}.json")
        records = read_json_records(path, f"{source.name} {split} data")
    else:
        from lota.core.hub import load_hub_split

        hub_records = load_hub_split(source.hub_id, source.hub_config, source.hub_splits[split])
        records = [source.from_hub(record) for record in hub_records]
    return [record | {"subtask": source.name} for record in records]


def present(source: Source, data_dir: Path | None) -> bool:
    """Whether a dataset joins the combined tasks: always from the hub; locally, an optional one
    only where its folder is."""
    return not source.optional or data_dir is None or (Path(data_dir) / source.name).is_dir()


def load_combined(split: str, data_dir: Path | None) -> list[dict[str, Any]]:
    """Every dataset's records of a split (training: the four with a training set, HellaSwag left out)."""
    sources = SOURCES if split == "test" else [source for source in SOURCES if not source.optional]
    return [
        record
        for source in sources
        if split in source.hub_splits and present(source, data_dir)
        for record in load_source(source, split, data_dir)
    ]


def load_official_training(split: str, data_dir: Path | None) -> list[dict[str, Any]]:
    """commonsense_170k's training records, and the suite's test records."""
    if split == "test":
        return load_combined(split, data_dir)
    return load_source(OFFICIAL_TRAINING, split, data_dir, OFFICIAL_TRAINING_FILE)


def to_example(record: dict[str, Any]) -> Example:
    instruction, output, answer, subtask = require_fields(
        record, ("instruction", "output", "answer", "subtask"), "commonsense"
    )
    question = with_input(instruction, record.get("input"))
    if not LABEL.fullmatch(str(answer)):
        raise UserError(f"{subtask} record has the answer {answer!r}, not a choice label")
    return Example(question=question, response=output, gold=str(answer), subtask=subtask)


def _single(source: Source) -> Task:
    return Task(
        name=source.name,
        load=lambda split, data_dir: load_source(source, split, data_dir),
        to_example=to_example,
        score=score,
        max_length=MAX_LENGTH,
        max_new_tokens=MAX_NEW_TOKENS,
        splits=tuple(source.hub_splits),
        official_score=official_score,
        hub_datasets=(source.hub_id,),
    )


def _evaluating_every_dataset(
    name: str, load: Callable[[str, Path | None], list[dict[str, Any]]], *training: Source
) -> Task:
    """A task scored on every dataset's test set (the mean over them), trained on `training`'s records."""
    sources = (*training, *SOURCES)
    return Task(
        name=name,
        load=load,
        to_example=to_example,
        score=score,
        max_length=MAX_LENGTH,
        max_new_tokens=MAX_NEW_TOKENS,
        subtasks=tuple(source.name for source in SOURCES),
        optional_parts=tuple(source.name for source in SOURCES if source.optional),
        folders=tuple(source.name for source in sources),
        official_score=official_score,
        hub_datasets=tuple(dict.fromkeys(source.hub_id for source in sources)),
    )


TASKS = (
    *(_single(source) for source in SOURCES),
    _evaluating_every_dataset(COMBINED, load_combined),
    _evaluating_every_dataset(OFFICIAL_TRAINING.name, load_official_training, OFFICIAL_TRAINING),
)
