"""A learning rate chosen on the validation split: the rule, the choice file, the select_lr stage,
and the train stage reading the choice."""

import json
from pathlib import Path

import pytest

from lota.core.errors import UserError
from lota.select_lr import SelectLrArgs, parse_candidates, run
from lota.train import TrainStageArgs, engine_args
from lota.training.lr_choice import choose_rate, read_chosen_rate


def result(correct, n=4):
    return {"accuracy": correct / n, "correct": correct, "n": n}


def test_the_highest_validation_accuracy_wins_and_a_tie_goes_to_the_rate_listed_first():
    choice = choose_rate("lota_gsm8k_s90", [(1e-4, result(1)), (3e-4, result(3)), (1e-3, result(3))])
    assert choice["lr"] == 3e-4 and choice["split"] == "validation"
    assert [row["lr"] for row in choice["candidates"]] == [1e-4, 3e-4, 1e-3]
    assert [row["correct"] for row in choice["candidates"]] == [1, 3, 3]
    assert choose_rate("fft_gsm8k", [(2e-5, result(0)), (1e-5, result(0))])["lr"] == 2e-5


def test_select_lr_writes_the_choice_of_its_candidates(tmp_path):
    paths = []
    for rate, correct in (("0.0001", 2), ("0.0003", 1)):
        paths.append(tmp_path / f"lr{rate}.json")
        paths[-1].write_text(json.dumps(result(correct)))
    out = tmp_path / "results" / "lr" / "lota_gsm8k_s90.json"
    run(SelectLrArgs(run="lota_gsm8k_s90", candidates=[f"0.0001={paths[0]}", f"0.0003={paths[1]}"], out=out))
    assert json.loads(out.read_text())["lr"] == 1e-4 and read_chosen_rate(out) == 1e-4


@pytest.mark.parametrize("entry", ["0.0001", "fast=x.json", "0.0001=", "-1=x.json"])
def test_a_malformed_candidate_is_named(entry):
    with pytest.raises(UserError, match=f"--candidates expects RATE=PATH, got {entry!r}"):
        parse_candidates([entry])


def test_a_candidate_that_is_not_a_validation_result_is_named(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"accuracy": 0.5}))
    with pytest.raises(UserError, match="bad.json is not a validation result"):
        run(SelectLrArgs(run="fft_gsm8k", candidates=[f"1e-5={tmp_path / 'bad.json'}"], out=tmp_path / "out.json"))
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("choice", [{"lr": 0}, {"lr": "fast"}, {"rate": 1e-4}, [1e-4], {"lr": True}])
def test_a_choice_that_holds_no_rate_is_named(tmp_path, choice):
    (tmp_path / "choice.json").write_text(json.dumps(choice))
    with pytest.raises(UserError, match="choice.json: 'lr' must be a rate in"):
        read_chosen_rate(tmp_path / "choice.json")


def test_the_train_stage_trains_at_the_chosen_rate(tmp_path):
    (tmp_path / "choice.json").write_text(json.dumps({"lr": 3e-4}))
    paths = {"model": Path("m"), "data": Path("d"), "out": Path("o")}
    assert engine_args(TrainStageArgs(**paths, lr=1e-5, lr_from=tmp_path / "choice.json")).lr == 3e-4
    assert engine_args(TrainStageArgs(**paths, lr=1e-5)).lr == 1e-5
