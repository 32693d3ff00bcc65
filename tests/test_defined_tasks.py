"""Tasks defined in the config (lota.tasks.defined): scorers on hand cases, the fields read from each
record, the errors a bad file or field stops with, the plan's options, and a defined task through
the real DAG on a tiny model."""

import json

import pytest
import yaml

from lota.core.errors import UserError
from lota.pipeline.plan import defined_tasks
from lota.tasks import get_task
from lota.tasks.defined import DefinedTask, choice_scorer, normalize_answer, parse_task_definitions
from lota.tasks.records import prepare_split
from tests.conftest import SHARED_DATA, planned_jobs, refused_plan, snakemake, tiny_workdir, write_records
from tests.test_plan import make_plan, options

CAPITALS = [
    ("France", "Paris"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Japan", "Tokyo"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Egypt", "Cairo"),
    ("Norway", "Oslo"),
    ("Chile", "Santiago"),
    ("Canada", "Ottawa"),
    ("Ghana", "Accra"),
    ("Nepal", "Kathmandu"),
]


def capitals_definition(folder, scorer="exact_match"):
    """A defined task as a user writes one: JSONL files of their own, a template prompt."""
    records = [{"country": country, "capital": capital} for country, capital in CAPITALS]
    write_records(folder / "capitals_train.jsonl", records[:8])
    (folder / "capitals_test.json").write_text(json.dumps(records[8:]))
    return {
        "train": str(folder / "capitals_train.jsonl"),
        "test": str(folder / "capitals_test.json"),
        "prompt": "What is the capital of {country}? Answer with the city's name.",
        "gold": "capital",
        "scorer": scorer,
    }


# --- scorers -----------------------------------------------------------------------------


def test_exact_match_compares_after_squads_normalization():
    assert normalize_answer("  The Eiffel-Tower!\n") == "eiffeltower"
    assert normalize_answer("An apple, a day") == "apple day"
    score = get_task("t", {"t": {"test": "t.jsonl", "prompt": "q", "gold": "a"}}).score
    assert score("Paris.", "paris") and score("the Paris", "Paris")
    assert not score("Paris, France", "Paris") and not score("", "Paris")


def test_number_scorers_read_the_last_number_or_the_marker():
    definition = {"test": "t.jsonl", "prompt": "q", "gold": "a"}
    last = get_task("t", {"t": definition | {"scorer": "last_number"}}).score
    marker = get_task("t", {"t": definition | {"scorer": "gsm8k_marker"}}).score
    assert last("5 apples and 7 pears make $1,200.", "1200") and not last("12 then 13", "12")
    assert last("it is -3.50", "-3.5") and not last("no number", "3")
    assert marker("#### 12 and then 13", "12") and not last("#### 12 and then 13", "12")
    assert marker("12 then 13", "13")  # no marker: the last number


def test_choice_labels_are_whole_words_and_case_counts():
    letters = choice_scorer(("A", "B", "C", "D"))
    assert letters("The answer is B.", "B") and letters("(C) because", "C")
    assert not letters("a cat, then B", "A")  # the article is no label; B is named first
    assert not letters("BA", "B") and not letters("no label", "A")
    paper = choice_scorer(())
    assert paper("the correct answer is Answer2", "answer2") and not paper("answer3", "answer2")


# --- records -----------------------------------------------------------------------------


def test_a_defined_gsm8k_reads_as_the_built_in_one():
    definition = {
        "train": str(SHARED_DATA / "gsm8k" / "train.jsonl"),
        "test": str(SHARED_DATA / "gsm8k" / "test.jsonl"),
        "prompt": "question",
        "response": "answer",
        "scorer": "gsm8k_marker",
    }
    defined, builtin = get_task("mine", {"mine": definition}), get_task("gsm8k")
    assert defined.splits == ("train", "test") and defined.score is builtin.score
    for split in ("train", "test"):
        mine = [defined.to_example(record) for record in defined.load(split, None)]
        theirs = [builtin.to_example(record) for record in builtin.load(split, SHARED_DATA)]
        assert [(e.question, e.response, e.gold) for e in mine] == [(e.question, e.response, e.gold) for e in theirs]
        assert {example.subtask for example in mine} == {"mine"}


def test_a_defined_multiple_choice_task_reads_as_the_built_in_one():
    definition = {
        "test": str(SHARED_DATA / "arc_easy" / "test.json"),
        "prompt": "instruction",
        "response": "output",
        "gold": "answer",
        "scorer": "choice_label",
    }
    defined, builtin = get_task("mine", {"mine": definition}), get_task("arc_easy")
    assert defined.splits == ("test",)  # no training file: evaluation-only
    mine = [defined.to_example(record) for record in defined.load("test", None)]
    theirs = [builtin.to_example(record) for record in builtin.load("test", SHARED_DATA)]
    assert [(e.question, e.response, e.gold) for e in mine] == [(e.question, e.response, e.gold) for e in theirs]


def test_templates_fill_fields_and_prepared_records_end_with_eos(tmp_path, smol_tokenizer):
    definitions = {"capitals": capitals_definition(tmp_path)}
    records = prepare_split("capitals", "test", None, smol_tokenizer, 0, 0, subset="first", definitions=definitions)
    assert [record["gold"] for record in records] == ["Santiago", "Ottawa", "Accra", "Kathmandu"]
    assert "What is the capital of Chile? Answer with the city's name." in records[0]["prompt"]
    assert records[0]["response"] == "Santiago" + smol_tokenizer.eos_token
    assert {record["subtask"] for record in records} == {"capitals"}
    literal = definitions["capitals"] | {"prompt": "{{{country}}}", "response": "{capital} ({country})"}
    example = get_task("capitals", {"capitals": literal}).to_example({"country": "Peru", "capital": "Lima"})
    assert (example.question, example.response, example.gold) == ("{Peru}", "Lima (Peru)", "Lima")


@pytest.mark.parametrize(
    "change, record, message",
    [
        ({}, {"nation": "Peru", "capital": "Lima"}, "record 1 lacks the field 'country' (tasks.t.define.prompt)"),
        ({}, {"country": "Peru"}, "record 1 lacks the field 'capital' (tasks.t.define.gold)"),
        ({}, {"country": "Peru", "capital": " "}, "record 1: the gold answer is empty"),
        ({"scorer": "last_number"}, {"country": "Peru", "capital": "Lima"}, "'Lima' is not a number"),
        ({"scorer": "choice_label", "labels": ["A", "B"]}, {"country": "Peru", "capital": "C"}, "'C' is not a label"),
        ({"scorer": "choice_label"}, {"country": "Peru", "capital": "Lima"}, "not a label (answerN"),
    ],
)
def test_a_bad_record_stops_naming_the_file_record_and_key(tmp_path, change, record, message):
    path = write_records(tmp_path / "data.jsonl", [record])
    definition = {"test": str(path), "prompt": "{country}?", "gold": "capital"} | change
    with pytest.raises(UserError, match=f"^{path}: .*") as error:
        get_task("t", {"t": definition}).load("test", None)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "definition, message",
    [
        ({"prompt": "q", "gold": "a"}, "tasks.t.define.test: a defined task needs its test file"),
        ({"test": "t.csv", "prompt": "q", "gold": "a"}, "tasks.t.define.test: t.csv must be a .jsonl or .json file"),
        ({"test": "t.jsonl", "gold": "a"}, "tasks.t.define.prompt"),
        ({"test": "t.jsonl", "prompt": "q"}, "tasks.t.define: give response, gold or both"),
        ({"test": "t.jsonl", "prompt": "{a.b}", "gold": "a"}, "tasks.t.define.prompt: {a.b} must name a field plainly"),
        ({"test": "t.jsonl", "prompt": "{a:>3}", "gold": "a"}, "tasks.t.define.prompt: {a} must name a field"),
        ({"test": "t.jsonl", "prompt": "{a", "gold": "a"}, "tasks.t.define.prompt: "),
        ({"test": "t.jsonl", "prompt": "q", "gold": "a", "scorer": "bleu"}, "tasks.t.define.scorer: one of"),
        ({"test": "t.jsonl", "prompt": "q", "gold": "a", "labels": ["A", "B"]}, "only the choice_label scorer"),
        ({"test": "t.jsonl", "prompt": "q", "gold": "a", "answer": "a"}, "tasks.t.define: unknown key 'answer'"),
    ],
)
def test_a_bad_definition_names_its_config_key(definition, message):
    with pytest.raises(UserError, match="^config key tasks.t.define") as error:
        DefinedTask("t", definition)
    assert message in str(error.value)


def test_bad_data_files_name_the_file(tmp_path):
    definition = {"prompt": "q", "gold": "a"}
    (tmp_path / "bad.jsonl").write_text('{"q": 1, "a": 2}\nnot json\n')
    with pytest.raises(UserError, match=rf"^{tmp_path}/bad.jsonl:2: malformed JSON line"):
        get_task("t", {"t": definition | {"test": str(tmp_path / "bad.jsonl")}}).load("test", None)
    (tmp_path / "bad.json").write_text('{"q": 1}')
    with pytest.raises(UserError, match=rf"^task t test data {tmp_path}/bad.json must hold a JSON list of objects"):
        get_task("t", {"t": definition | {"test": str(tmp_path / "bad.json")}}).load("test", None)
    with pytest.raises(UserError, match="task t has no train split"):
        get_task("t", {"t": definition | {"test": str(tmp_path / "bad.json")}}).load("train", None)


def test_task_definitions_option_is_a_json_object():
    assert parse_task_definitions("") == {}
    assert parse_task_definitions('{"t": {"test": "x.jsonl"}}') == {"t": {"test": "x.jsonl"}}
    with pytest.raises(UserError, match="--task-definitions is not valid JSON"):
        parse_task_definitions("{")
    with pytest.raises(UserError, match="--task-definitions must be a JSON object"):
        parse_task_definitions('["t"]')


# --- the plan ----------------------------------------------------------------------------


def test_the_config_defines_tasks_beside_the_built_in_ones(tmp_path):
    definition = capitals_definition(tmp_path)
    with pytest.raises(UserError, match="unknown task 'capitals'.* needs tasks.capitals.define"):
        defined_tasks({"gsm8k": {}, "capitals": {}})
    with pytest.raises(UserError, match="tasks.gsm8k.define: gsm8k is a built-in task"):
        defined_tasks({"gsm8k": {"define": definition}})
    with pytest.raises(UserError, match="tasks.capitals.define.test: no file"):
        defined_tasks({"capitals": {"define": definition | {"test": str(tmp_path / "missing.jsonl")}}})
    with pytest.raises(UserError, match="task name 'capitals_s90'"):
        defined_tasks({"capitals_s90": {"define": definition}})
    assert defined_tasks({"gsm8k": {}, "capitals": {"define": definition}}) == {"capitals": definition}


def test_the_stages_get_the_definitions_of_their_tasks_alone(tmp_path):
    definition = capitals_definition(tmp_path)
    plan = make_plan(tasks={"gsm8k": {}, "mawps": {}, "capitals": {"define": definition}})
    assert plan.local_task_files("capitals") == [definition["train"], definition["test"]]
    assert plan.task_setting("capitals", "max_new_tokens") == 256
    assert json.loads(options(plan.scoring_options(["gsm8k", "capitals"]))["--task-definitions"]) == {
        "capitals": definition
    }
    assert plan.scoring_options(["gsm8k", "mawps"]) == ""
    assert "--task-definitions" in options(plan.prepare_data_options("capitals_seed1"))
    assert "--task-definitions" not in options(plan.prepare_data_options("gsm8k"))
    assert "--task-definitions" in options(plan.model_card_options(["gsm8k", "capitals"]))
    plan.run("lota_capitals_s90")  # a trainable, scored task
    generation_only = make_plan(tasks={"gsm8k": {}, "capitals": {"define": definition | {"scorer": "none"}}})
    with pytest.raises(UserError, match="task 'capitals' has no built-in scorer"):
        generation_only.merge("ties_gsm8k+capitals")
    evaluation_only = make_plan(tasks={"capitals": {"define": {k: v for k, v in definition.items() if k != "train"}}})
    with pytest.raises(UserError, match="task 'capitals' is evaluation-only"):
        evaluation_only.run("fft_capitals")
    evaluation_only.run("base_capitals")


# --- the workflow ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model, gsm8k_dir):
    root = tmp_path_factory.mktemp("defined")
    (root / "my_data").mkdir()
    definition = capitals_definition(root / "my_data")  # paths relative to the working directory:
    definition["train"], definition["test"] = "my_data/capitals_train.jsonl", "my_data/capitals_test.json"
    workdir = tiny_workdir(
        root,
        tiny_model,
        gsm8k_dir,
        continual={"sequences": [["gsm8k", "capitals"]], "methods": ["lotto"], "sparsity": 90},
        merge={"tasks": [["capitals", "gsm8k"]], "methods": ["ties"], "density": 0.5},
    )
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["tasks"]["capitals"] = {"train_size": 8, "eval_size": 4, "max_new_tokens": 4, "define": definition}
    config["sweep"] = {"tasks": ["capitals"], "sparsities": [90], "methods": ["base", "lota"]}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return workdir


def test_a_missing_file_is_refused_at_planning_time(workdir):
    output = refused_plan(
        workdir, "results/fft_capitals.json", overrides={"tasks": {"capitals": {"define": {"test": "my_data/no.json"}}}}
    )
    assert "config key tasks.capitals.define.test: no file my_data/no.json" in output


@pytest.mark.slow  # about 3 minutes: a sweep, a sequence, a merge and the report on a defined task
def test_a_defined_task_runs_sweeps_sequences_merges_and_the_report(workdir):
    done = snakemake(workdir, "--cores", "2", "sweep", "continual", "merge")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((workdir / "results" / "lota_capitals_s90.json").read_text())
    assert result["task"] == "capitals" and result["n"] == 4 and result["trainable_params"] > 0
    sequence = json.loads((workdir / "results" / "cl" / "lotto_gsm8k-capitals_s90.json").read_text())
    assert set(sequence["stages"][-1]["accuracy"]) == {"gsm8k", "capitals"}
    merge = json.loads((workdir / "results" / "merge" / "ties_capitals+gsm8k.json").read_text())
    assert merge["accuracy"]["capitals"]["n"] == 4
    report = (workdir / "results" / "report.md").read_text()
    assert "lota_capitals_s90" in report and "lotto_gsm8k-capitals_s90" in report

    # Changing the data reruns the data preparation and everything after it; nothing else.
    records = [json.loads(line) for line in (workdir / "my_data" / "capitals_train.jsonl").read_text().splitlines()]
    write_records(workdir / "my_data" / "capitals_train.jsonl", records[::-1])
    plan = snakemake(workdir, "-n", "results/base_capitals.json", "results/fft_gsm8k.json")
    jobs = planned_jobs(plan.stdout + plan.stderr)
    assert jobs.get("prepare_data") == 1 and "train_dense" not in jobs, plan.stdout[-2000:]
