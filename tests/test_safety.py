"""What runs and what is loaded: no pickle for weights, no model code unless the config asks, and no
config string or file name that the shell could run.

Static checks read lota/ and workflow/rules/; one dry run renders every rule's command from a
config whose strings are full of shell syntax, with trust_remote_code on.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import shlex
import typing

import yaml

from lota.core.cli import trust_remote_code_arg
from tests.conftest import REPO, SHARED_DATA, snakemake
from tests.test_atomic_outputs import listed_jobs

LOTA_MODULES = sorted((REPO / "lota").rglob("*.py"))
RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))
# A rule's name where it is defined: `rule NAME:`, or `use rule OTHER as NAME with:`.
RULE_NAME = re.compile(r"^(?:rule|checkpoint|use rule \w+ as) (\w+)", re.M)
STAGE_RULE = re.compile(r"^(?:rule|checkpoint) (\w+):", re.M)  # a rule of its own, not a `use rule`
PICKLING_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve"}
PICKLED_WEIGHTS_FILE = re.compile(r"[\w./{}-]*\.(?:bin|pt|pth|pkl|pickle|ckpt)")
# Placeholders a rule's shell command may hold without :q, each safe for the reason above it.
UNQUOTED_PLACEHOLDERS = {
    # Option strings built by lota.pipeline.plan's cli_options (each value shlex-quoted), or lists of
    # shlex-quoted KEY=PATH items (lota.pipeline.plan.key_paths).
    *("params.options", "params.trust", "params.threads", "params.data_dir", "params.exclude", "params.shape"),
    *("params.summary", "params.benchmarks", "params.samples", "params.splits", "params.lr_choice", "params.pairs"),
    *("params.candidates", "params.scoring", "resources.tracking"),
    # Numbers: integers the config schema checks, sparsities parsed from run names.
    *("resources.processes", "resources.checkpoint_every", "params.max_new_tokens", "params.sparsity"),
    # A task, a method or tasks parsed from the wildcards, or (harness.smk's tasks) cli_options.
    *("params.task", "params.method", "params.tasks"),
}
# A config string with shell syntax of every kind: expansions, separators, quotes, globs.
HOSTILE = "x $(touch PWNED); `touch PWNED` 'q\" $HOME | * ~ && #"


def stage_options(stage: str) -> set[str]:
    """The option names of a stage's command line (the fields of its run function's arguments)."""
    args_type = typing.get_type_hints(importlib.import_module(f"lota.{stage}").run)["args"]
    return {field.name for field in dataclasses.fields(args_type)}


def parsed_modules():
    for module in LOTA_MODULES:
        yield module, ast.parse(module.read_text())


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((item.value for item in call.keywords if item.arg == name), None)


def is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def test_weights_are_never_pickled():
    for module, tree in parsed_modules():
        for node in ast.walk(tree):
            where = f"{module.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                assert not {alias.name.split(".")[0] for alias in node.names} & PICKLING_MODULES, where
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in PICKLING_MODULES, where
                assert node.module != "torch" or not {"load", "save"} & {alias.name for alias in node.names}, where
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                on_torch = isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                assert not (on_torch and node.func.attr == "save"), f"{where}: torch.save pickles"
                if on_torch and node.func.attr == "load":
                    assert is_true(keyword(node, "weights_only")), f"{where}: torch.load without weights_only=True"
                safe = keyword(node, "safe_serialization")
                assert not (isinstance(safe, ast.Constant) and safe.value is False), f"{where}: not safetensors"
                assert not is_true(keyword(node, "allow_pickle")), where
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not PICKLED_WEIGHTS_FILE.fullmatch(node.value), f"{where}: {node.value}"


def test_model_code_runs_only_when_the_config_asks():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert config["base_model"]["trust_remote_code"] is False
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["base_model"]["properties"]["trust_remote_code"]["default"] is False

    loaders = 0
    for module, tree in parsed_modules():
        for node in ast.walk(tree):
            where = f"{module.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call):
                assert not is_true(keyword(node, "trust_remote_code")), where
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
                if name in ("from_pretrained", "LLM", "pipeline"):  # every loader passes the stage's option on
                    loaders += 1
                    assert keyword(node, "trust_remote_code") is not None, f"{where}: {name} without trust_remote_code"
            if isinstance(node, ast.Dict):  # keyword arguments of a harness (lm-eval's model_args)
                for key, value in zip(node.keys, node.values, strict=True):
                    is_trust = isinstance(key, ast.Constant) and key.value == "trust_remote_code"
                    assert not (is_trust and is_true(value)), where
            if isinstance(node, ast.arguments):
                named = node.posonlyargs + node.args + node.kwonlyargs
                defaults = [None] * (len(node.posonlyargs + node.args) - len(node.defaults)) + node.defaults
                for argument, default in zip(named, defaults + node.kw_defaults, strict=True):
                    assert not (argument.arg == "trust_remote_code" and is_true(default)), where
    assert loaders >= 4  # the check found the loaders: base_model's, modeling's, vLLM's
    assert trust_remote_code_arg().default is False


def shell_commands():
    """(file, rule, command template) of every rule with a shell command in workflow/rules/."""
    for rule_file in RULE_FILES:
        text = rule_file.read_text()
        for block in re.finditer(r"^(?P<indent> +)shell:\n(?P<lines>(?:(?P=indent) +\".*\"\n)+)", text, re.M):
            rule = RULE_NAME.findall(text[: block.start()])[-1]
            yield rule_file.name, rule, ast.literal_eval(f"({block['lines']})")


def test_every_placeholder_in_a_rule_command_is_quoted_or_built_quoted():
    commands = list(shell_commands())
    stage_rules = {rule for rule_file in RULE_FILES for rule in STAGE_RULE.findall(rule_file.read_text())}
    assert {rule for _, rule, _ in commands} == stage_rules  # each found
    for rule_file, rule, command in commands:
        for placeholder in re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", command):
            quoted = placeholder.endswith(":q") or placeholder in UNQUOTED_PLACEHOLDERS
            assert quoted, f"{rule_file} {rule}: {{{placeholder}}}"


def unquoted_text(command: str) -> str:
    """What bash reads in `command` outside quotes, with an error at any expansion in double quotes."""
    outside, quote, escaped = [], None, False
    for character in command:
        if escaped:
            escaped = False
        elif quote == "'":
            quote = None if character == "'" else quote
        elif character == "\\":
            escaped = True
        elif character == '"':
            quote = None if quote else '"'
        elif quote:
            assert character not in "$`", f"an expansion in double quotes: {command}"
        elif character == "'":
            quote = "'"
        else:
            outside.append(character)
    assert quote is None, f"an unclosed quote: {command}"
    return "".join(outside)


def test_config_strings_reach_commands_quoted(tmp_path):
    data_dir = tmp_path / f"data {HOSTILE}"
    data_dir.mkdir()
    for task_data in SHARED_DATA.iterdir():
        if task_data.is_dir():
            (data_dir / task_data.name).symlink_to(task_data)
    judge = tmp_path / f"judge {HOSTILE}"
    judge.mkdir()
    model = tmp_path / f"model {HOSTILE}"  # the plan checks that a local source exists
    model.mkdir()
    (model / "config.json").write_text("{}")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config |= {
        "data_dir": str(data_dir),
        "base_model": {"source": str(model), "trust_remote_code": True},
        "sweep": {
            "tasks": ["gsm8k"],
            "sparsities": [90],
            "methods": ["base", "fft", "lora", "lota", "rosa"],
            "mask_strategies": ["task_vector", "fisher", "random"],
        },
        "continual": {"sequences": [["gsm8k", "mawps"]], "later_stages": {"lora": {"lr": 1.0e-4}}},
        "merge": {"tasks": [["gsm8k", "mawps"]]},
        "seeds": [0, 1],  # the replicates' data jobs, and (with rates to choose) the validation runs'
        "lmeval": {"models": ["lota_gsm8k_s90"], "tasks": ["gsm8k", f"arc_easy {HOSTILE}"]},
        "alpaca_eval": {"models": ["base_gsm8k"], "judge": "local", "judge_model": str(judge)},
    }
    for method in ("lora", "rosa"):
        config["train"][method]["lr"] = [1.0e-4, 2.0e-4]
    config["tasks"]["gsm8k"]["valid_size"] = 4
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    targets = ["sweep", "continual", "merge", "lmeval", "alpaca_eval", "work/adapters/lota_gsm8k_s90"]
    targets += [
        "work/release/lota_gsm8k_s90",
        "work/release/cl/lota_gsm8k-mawps_s90",
        "work/release/merge/ties_gsm8k+mawps",
    ]
    plan = snakemake(workdir, "-n", "--forceall", "--printshellcmds", *targets)
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = [job for job in listed_jobs(plan.stdout + plan.stderr) if job.command]

    defined = {rule for rule_file in RULE_FILES for rule in RULE_NAME.findall(rule_file.read_text())}
    assert {job.rule for job in jobs} == defined  # every rule's command is checked
    assert {"base_model", "prepare_data", "lmeval_tasks", "evaluate_lmeval", "evaluate_alpaca"} <= {
        job.rule for job in jobs if "PWNED" in job.command
    }
    for job in jobs:
        # Outside quotes only words, options and the log redirection remain: nothing to run or expand.
        bare = unquoted_text(job.command).replace("2>&1", "")
        assert not set(bare) & set("$`;&|()<*?[]{}!#~\n"), f"{job.rule}: {job.command}"
        tokens = shlex.split(job.command)
        stage = tokens[tokens.index("-m") + 1].removeprefix("lota.")
        if "trust_remote_code" in stage_options(stage):
            assert "--trust-remote-code" in tokens, f"{job.rule} does not pass base_model.trust_remote_code on"
    assert not list(workdir.rglob("PWNED"))
