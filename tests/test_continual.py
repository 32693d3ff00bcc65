"""Task-sequence results: the accuracy matrix, forgetting with its paired interval, mask overlaps."""

import json
import math

import pytest
import torch

from lota.complement_mask import ComplementMaskArgs, complement
from lota.complement_mask import run as complement_run
from lota.continual import ContinualArgs, continual_result, parse_samples
from lota.core.errors import UserError
from lota.deltas.masks import load_mask, save_mask
from lota.evaluation.forgetting import flips, forgetting, mean_difference


def write_samples(path, golds, right, subtasks=None):
    """Samples whose completion states the gold answer where `right` says so, a wrong one elsewhere."""
    with open(path, "w") as out:
        for number, (gold, correct) in enumerate(zip(golds, right, strict=True)):
            sample = {"gold": gold, "completion": f"#### {gold if correct else gold + 1}", "backend": "transformers"}
            if subtasks:
                sample["subtask"] = subtasks[number]
            out.write(json.dumps(sample) + "\n")
    return path


def test_flips_count_the_items_that_changed_each_way():
    before = [True, True, True, False, False]
    after = [True, False, False, True, False]
    assert flips(before, after) == (2, 1, 5)


def test_the_forgetting_interval_is_agresti_min():
    # 10 items: 3 right then wrong, 1 wrong then right, so accuracy dropped by 2/10.
    result = mean_difference([(3, 1, 10)])
    assert result["difference"] == pytest.approx(0.2)
    b, c, n = 3.5, 1.5, 12
    centre, half = (b - c) / n, 1.959963984540054 * math.sqrt((b + c) - (b - c) ** 2 / n) / n
    assert result["ci95"] == pytest.approx([centre - half, centre + half])
    assert (result["lost"], result["gained"], result["n"]) == (3, 1, 10)


def test_no_flips_still_gives_an_interval_around_zero():
    result = mean_difference([(0, 0, 50)])
    assert result["difference"] == 0.0
    low, high = result["ci95"]
    assert low < 0 < high and high == pytest.approx(-low)


def test_forgetting_of_a_combined_task_averages_its_subtasks():
    samples = [{"subtask": name} for name in ("a", "a", "b", "b", "b", "b")]
    before = [True, True, True, True, False, False]
    after = [False, True, True, True, True, False]
    result = forgetting(samples, before, after, ("a", "b"))
    assert result["subtasks"]["a"]["difference"] == pytest.approx(0.5)
    assert result["subtasks"]["b"]["difference"] == pytest.approx(-0.25)
    assert result["difference"] == pytest.approx(0.125)
    assert (result["lost"], result["gained"], result["n"]) == (1, 1, 6)


def test_samples_must_cover_every_stage_on_every_task():
    tasks = ["mawps", "gsm8k"]
    entries = [f"{stage}:{task}=s{stage}{task}.jsonl" for stage in range(3) for task in tasks]
    assert parse_samples(entries, tasks)[2, "gsm8k"].name == "s2gsm8k.jsonl"
    with pytest.raises(UserError, match="no samples of stage 2 on task gsm8k"):
        parse_samples(entries[:-1], tasks)
    with pytest.raises(UserError, match="task 'arc' is not in the sequence mawps-gsm8k"):
        parse_samples([*entries, "1:arc=x.jsonl"], tasks)
    with pytest.raises(UserError, match="expects STAGE:TASK=PATH"):
        parse_samples(["mawps=x.jsonl"], tasks)


@pytest.fixture
def sequence_files(tmp_path):
    """Samples of a two-stage sequence on gsm8k (4 items) then mawps (5 items)."""
    golds = {"gsm8k": [1, 2, 3, 4], "mawps": [5, 6, 7, 8, 9]}
    right = {
        (0, "gsm8k"): [False, False, False, True],
        (0, "mawps"): [False, False, False, False, False],
        (1, "gsm8k"): [True, True, True, False],
        (1, "mawps"): [False, False, True, False, False],
        (2, "gsm8k"): [True, False, False, True],
        (2, "mawps"): [True, True, True, True, False],
    }
    samples = [
        f"{stage}:{task}={write_samples(tmp_path / f'{stage}_{task}.jsonl', golds[task], verdicts)}"
        for (stage, task), verdicts in right.items()
    ]
    summaries = []
    for stage in (1, 2):
        path = tmp_path / f"summary{stage}.json"
        path.write_text(json.dumps({"trainable_params": 10 * stage, "train_wall_s": 5.0, "steps": 3}))
        summaries.append(path)
    return samples, summaries


def test_the_result_holds_every_stage_on_every_task_and_the_forgetting(sequence_files, tmp_path):
    samples, summaries = sequence_files
    out = tmp_path / "results" / "cl" / "fft_gsm8k-mawps.json"
    args = ContinualArgs(
        out=out, tasks=["gsm8k", "mawps"], samples=samples, run="fft_gsm8k-mawps", method="fft", train_summary=summaries
    )
    continual_result(args)
    result = json.loads(out.read_text())
    accuracy = [[stage["accuracy"][task]["accuracy"] for task in ("gsm8k", "mawps")] for stage in result["stages"]]
    assert accuracy == [[0.25, 0.0], [0.75, 0.2], [0.5, 0.8]]
    assert [stage["trained_on"] for stage in result["stages"]] == [None, "gsm8k", "mawps"]
    assert [stage["trainable_params"] for stage in result["stages"]] == [0, 10, 20]
    assert result["stages"][0]["train"] is None and result["stages"][2]["train"]["steps"] == 3
    drop = result["forgetting"]["gsm8k"]
    assert drop["difference"] == pytest.approx(0.25) and (drop["lost"], drop["gained"]) == (2, 1)
    assert (drop["after_own_stage"], drop["after_last_stage"]) == (0.75, 0.5)
    assert list(result["forgetting"]) == ["gsm8k"]
    assert result["final_mean_accuracy"] == pytest.approx(0.65)
    assert result["stages"][1]["accuracy"]["gsm8k"]["items"] == {"1": 1, "2": 1, "3": 1, "4": 0}
    assert result["mask_overlap"] is None and result["generation_backend"] == "transformers"


def test_samples_of_other_test_items_are_refused(sequence_files, tmp_path):
    samples, _ = sequence_files
    stray = write_samples(tmp_path / "other.jsonl", [1, 2, 3, 5], [True] * 4)
    samples = [entry for entry in samples if not entry.startswith("2:gsm8k=")] + [f"2:gsm8k={stray}"]
    out = tmp_path / "out.json"
    with pytest.raises(UserError, match="are not samples of the same test items"):
        continual_result(ContinualArgs(out=out, tasks=["gsm8k", "mawps"], samples=samples))
    assert not out.exists()


def test_a_sequence_needs_two_distinct_tasks(sequence_files, tmp_path):
    samples, _ = sequence_files
    with pytest.raises(UserError, match="two or more distinct tasks"):
        continual_result(ContinualArgs(out=tmp_path / "o.json", tasks=["gsm8k", "gsm8k"], samples=samples))


def masks_on_disk(tmp_path, *patterns):
    paths = []
    for number, pattern in enumerate(patterns):
        path = tmp_path / f"mask{number}.safetensors"
        save_mask(path, {"w.weight": torch.tensor(pattern, dtype=torch.bool).view(2, 3)}, {})
        paths.append(path)
    return paths


def test_mask_overlaps_are_counted_for_every_two_stages(sequence_files, tmp_path):
    samples, _ = sequence_files
    masks = masks_on_disk(tmp_path, [1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0])
    out = tmp_path / "out.json"
    continual_result(ContinualArgs(out=out, tasks=["gsm8k", "mawps"], samples=samples, mask=masks))
    assert json.loads(out.read_text())["mask_overlap"] == {"1-2": 1}


def test_the_complement_leaves_out_every_given_mask():
    first = {"w": torch.tensor([[True, False], [False, False]])}
    second = {"w": torch.tensor([[False, False], [False, True]])}
    assert complement([first, second])["w"].tolist() == [[False, True], [True, False]]


def test_complement_mask_cli_writes_a_mask_and_checks_shapes(tmp_path):
    paths = masks_on_disk(tmp_path, [1, 0, 0, 0, 0, 1], [0, 0, 1, 0, 0, 0])
    out = tmp_path / "flip.safetensors"
    complement_run(ComplementMaskArgs(masks=paths, out=out))
    assert load_mask(out)["w.weight"].flatten().tolist() == [False, True, False, True, True, False]
    odd = tmp_path / "odd.safetensors"
    save_mask(odd, {"w.weight": torch.zeros(3, 2, dtype=torch.bool)}, {})
    with pytest.raises(UserError, match=r"w.weight has shape \(3, 2\), .*mask0.safetensors's is \(2, 3\)"):
        complement_run(ComplementMaskArgs(masks=[paths[0], odd], out=tmp_path / "bad.safetensors"))
    assert not (tmp_path / "bad.safetensors").exists()
