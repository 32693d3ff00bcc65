"""The vocabulary: every name kind parses and formats back, refuses what it cannot mean with one line,
and agrees with the config schema's lists."""

from __future__ import annotations

import pytest
import yaml

from lota.core.errors import UserError
from lota.pipeline import names
from lota.pipeline.names import Merge, Run, Sequence, parse_merge, parse_run, parse_sequence
from lota.tasks import task_names
from tests.conftest import REPO

RANK, SCALE = 16, 1.0


@pytest.mark.parametrize(
    ("name", "run"),
    [
        ("base_gsm8k", Run("base", "gsm8k")),
        ("fft_arc_easy", Run("fft", "arc_easy")),
        ("lora_social_i_qa", Run("lora", "social_i_qa", rank=RANK)),
        ("lora_arc_easy_r8", Run("lora", "arc_easy", rank=8, named_rank=True)),
        ("lota_gsm8k_s90", Run("lota", "gsm8k", "90", "task_vector")),
        ("lota_arc_easy_s99.9_random", Run("lota", "arc_easy", "99.9", "random")),
        ("lota_social_i_qa_s0_base_magnitude", Run("lota", "social_i_qa", "0", "base_magnitude")),
        ("rosa_gsm8k_s90", Run("rosa", "gsm8k", "90", "fisher", RANK)),
        ("rosa_arc_easy_s95_task_vector", Run("rosa", "arc_easy", "95", "task_vector", RANK)),
        ("base_gsm8k_seed1", Run("base", "gsm8k", seed=1)),
        ("lota_arc_easy_s90_random_seed12", Run("lota", "arc_easy", "90", "random", seed=12)),
        ("lora_gsm8k_r8_seed0", Run("lora", "gsm8k", rank=8, named_rank=True, seed=0)),
    ],
)
def test_a_run_name_parses_and_formats_back(name, run):
    assert parse_run(name, RANK) == run
    assert run.name == name


def test_a_run_knows_its_sparsity_exactly_and_its_mask():
    run = parse_run("lota_arc_easy_s99.9_random", RANK)
    assert run.sparsity == 0.999 and run.mask == "arc_easy_s99.9_random"
    assert parse_run("rosa_gsm8k_s90", RANK).mask == "gsm8k_s90_fisher"
    assert parse_run("lota_gsm8k_s90", RANK).mask == "gsm8k_s90"
    assert parse_run("fft_gsm8k", RANK).sparsity is None


def test_a_replicate_has_its_own_mask_keyed_by_its_replicate():
    run = parse_run("lota_arc_easy_s90_random_seed2", RANK)
    assert run.replicate == "arc_easy_seed2" and run.mask == "arc_easy_seed2_s90_random"
    assert parse_run("lota_gsm8k_s90", RANK).replicate == "gsm8k"


@pytest.mark.parametrize(
    ("name", "split"),
    [
        ("lota_gsm8k_s90_seed2", ("lota_gsm8k_s90", 2)),
        ("lotto_gsm8k-mawps_s90_seed10", ("lotto_gsm8k-mawps_s90", 10)),
        ("arc_easy_seed0", ("arc_easy", 0)),
        ("fft_gsm8k", ("fft_gsm8k", None)),
    ],
)
def test_a_name_splits_into_its_stem_and_seed(name, split):
    assert names.split_seed(name) == split


@pytest.mark.parametrize(
    ("name", "sequence", "stages"),
    [
        ("fft_gsm8k-arc_easy", Sequence("fft", ("gsm8k", "arc_easy")), ["fft_gsm8k", "fft_gsm8k-arc_easy"]),
        (
            "lora_gsm8k-mawps_r8",
            Sequence("lora", ("gsm8k", "mawps"), rank=8, named_rank=True),
            ["lora_gsm8k_r8", "lora_gsm8k-mawps_r8"],
        ),
        (
            "lotto_gsm8k-mawps-arc_easy_s99.5",
            Sequence("lotto", ("gsm8k", "mawps", "arc_easy"), "99.5"),
            ["lota_gsm8k_s99.5", "lotto_gsm8k-mawps_s99.5", "lotto_gsm8k-mawps-arc_easy_s99.5"],
        ),
        (
            "lotto_gsm8k-mawps_s90_seed3",
            Sequence("lotto", ("gsm8k", "mawps"), "90", seed=3),
            ["lota_gsm8k_s90_seed3", "lotto_gsm8k-mawps_s90_seed3"],
        ),
        (
            "fft_gsm8k-mawps_seed1",
            Sequence("fft", ("gsm8k", "mawps"), seed=1),
            ["fft_gsm8k_seed1", "fft_gsm8k-mawps_seed1"],
        ),
    ],
)
def test_a_sequence_name_parses_formats_back_and_names_its_stages(name, sequence, stages):
    parsed = parse_sequence(name, RANK)
    assert parsed == sequence and parsed.name == name
    assert parsed.stage_models == stages


def test_a_sequence_knows_how_its_stages_train():
    lotto, flip = parse_sequence("lotto_gsm8k-mawps_s90", RANK), parse_sequence("lottoflip_gsm8k-mawps_s90", RANK)
    assert (lotto.training_method, lotto.calibration_kind, lotto.sparsity) == ("lota", "dense", 0.9)
    assert (flip.training_method, flip.calibration_kind) == ("lota", "flip")
    assert parse_sequence("lora_gsm8k-mawps", RANK).rank == RANK


@pytest.mark.parametrize(
    ("name", "merge", "runs"),
    [
        ("ties_gsm8k+arc_easy", Merge("ties", ("gsm8k", "arc_easy"), scale=SCALE), ["fft_gsm8k", "fft_arc_easy"]),
        (
            "ta_gsm8k+mawps+arc_easy_l0.5",
            Merge("ta", ("gsm8k", "mawps", "arc_easy"), scale=0.5, named_scale="0.5"),
            ["fft_gsm8k", "fft_mawps", "fft_arc_easy"],
        ),
        (
            "lotasum_gsm8k+mawps_s90_l2",
            Merge("lotasum", ("gsm8k", "mawps"), "90", 2.0, "2"),
            ["lota_gsm8k_s90", "lota_mawps_s90"],
        ),
        (
            "lotasum_gsm8k+mawps_s90_l2_seed4",
            Merge("lotasum", ("gsm8k", "mawps"), "90", 2.0, "2", seed=4),
            ["lota_gsm8k_s90_seed4", "lota_mawps_s90_seed4"],
        ),
        (
            "dareties_gsm8k+mawps_seed1",
            Merge("dareties", ("gsm8k", "mawps"), seed=1),
            ["fft_gsm8k_seed1", "fft_mawps_seed1"],
        ),
    ],
)
def test_a_merge_name_parses_formats_back_and_names_its_runs(name, merge, runs):
    parsed = parse_merge(name, SCALE)
    assert parsed == merge and parsed.name == name and parsed.runs == runs


PARSERS = {
    "run": lambda name: parse_run(name, RANK),
    "sequence": lambda name: parse_sequence(name, RANK),
    "merge": lambda name: parse_merge(name, SCALE),
}


@pytest.mark.parametrize(
    ("kind", "name", "message"),
    [
        ("run", "dpo_gsm8k", "run name 'dpo_gsm8k' is not base_<task>, fft_<task>, lora_<task>[_r<rank>]"),
        ("run", "lota_gsm8k", "run name 'lota_gsm8k' is not"),
        ("run", "fft_gsm8k_s90", "run name 'fft_gsm8k_s90' is not"),
        ("run", "lora_gsm8k_random", "run name 'lora_gsm8k_random' is not"),
        ("run", "rosa_gsm8k_s90_r8", "run name 'rosa_gsm8k_s90_r8' is not"),
        ("run", "lota_gsm8k_s090", "run name 'lota_gsm8k_s090' is not"),
        ("run", "lota_gsm8k_s90.0", "run name 'lota_gsm8k_s90.0' is not"),
        ("run", "lota_gsm8k_s100", "sparsity s100 is 1.0, outside [0, 1): use s0 to s99.9"),
        ("run", "lota_gsm8k_s90_task_vector", "task_vector is lota's own mask strategy: drop _task_vector"),
        ("run", "rosa_gsm8k_s90_fisher", "fisher is rosa's own mask strategy: drop _fisher"),
        ("run", "lora_gsm8k_r16", "rank 16 is the configured one (config key lora.rank): name it lora_gsm8k"),
        ("run", "lota_gsm8k_seed1_s90", "task name 'gsm8k_seed1': its part 'seed1' reads as a name suffix"),
        ("run", "fft_gsm8k_seed01", "its part 'seed01' reads as a name suffix"),
        ("sequence", "lotto_gsm8k-mawps", "lotto needs the masks' sparsity, e.g. lotto_gsm8k-mawps_s90"),
        ("sequence", "fft_gsm8k-mawps_s90", "_s<percent> is for lota, lotto, lottoflip, _r<rank> for lora"),
        ("sequence", "lota_gsm8k-mawps_s90_r8", "_s<percent> is for lota, lotto, lottoflip, _r<rank> for lora"),
        ("sequence", "fft_gsm8k-gsm8k", "sequence 'fft_gsm8k-gsm8k' names a task twice"),
        ("sequence", "dpo_gsm8k-mawps", "sequence run name 'dpo_gsm8k-mawps' is not <method>_<task>-<task>"),
        ("sequence", "fft_gsm8k", "sequence run name 'fft_gsm8k' is not"),
        ("sequence", "lora_gsm8k-mawps_r16", "rank 16 is the configured one (config key lora.rank): drop _r16"),
        ("sequence", "lotto_gsm8k-mawps_s100", "sparsity s100 is 1.0, outside [0, 1)"),
        ("merge", "lotasum_gsm8k+mawps", "lotasum needs its LoTA runs' sparsity (_s<percent>)"),
        ("merge", "ties_gsm8k+mawps_s90", "lotasum needs its LoTA runs' sparsity (_s<percent>), the others none"),
        ("merge", "ties_gsm8k+gsm8k", "merge 'ties_gsm8k+gsm8k' names a task twice"),
        ("merge", "ties_gsm8k+mawps_l1", "lambda 1 is the configured one (config key merge.scale): drop _l1"),
        ("merge", "ties_gsm8k+mawps_l0", "lambda 0 would merge nothing: drop _l0"),
        ("merge", "slerp_gsm8k+mawps", "merge name 'slerp_gsm8k+mawps' is not <method>_<task>+<task>"),
    ],
)
def test_a_bad_name_is_refused_in_one_line(kind, name, message):
    with pytest.raises(UserError) as refused:
        PARSERS[kind](name)
    assert message in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(("number", "name"), [(90, "90"), (90.0, "90"), (99.9, "99.9"), (0.50, "0.5"), ("1.50", "1.5")])
def test_numbers_have_one_spelling(number, name):
    assert names.number_name(number) == name


def test_every_registered_task_reads_one_way_in_every_name_kind():
    for task in task_names():
        names.check_task_name(task)
        assert parse_run(f"lota_{task}_s90_random", RANK) == Run("lota", task, "90", "random")
        assert parse_sequence(f"lotto_{task}-{task}x_s90", RANK).tasks == (task, f"{task}x")
        assert parse_merge(f"lotasum_{task}+{task}x_s90", SCALE).tasks == (task, f"{task}x")


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("foo_s90", "its part 's90' reads as a name suffix"),
        ("foo_r2_bar", "its part 'r2' reads as a name suffix"),
        ("foo_random", "its part 'random' reads as a name suffix"),
        ("foo_seed3", "its part 'seed3' reads as a name suffix"),
        ("Foo", "use lower-case letters, digits and single underscores"),
        ("foo__bar", "use lower-case letters, digits and single underscores"),
    ],
)
def test_a_task_name_that_would_make_names_ambiguous_is_refused(task, message):
    with pytest.raises(UserError, match=message):
        names.check_task_name(task)


def test_the_config_schema_lists_the_vocabulary():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())["properties"]
    assert schema["sweep"]["properties"]["methods"]["items"]["enum"] == list(names.RUN_METHODS)
    assert schema["sweep"]["properties"]["mask_strategies"]["items"]["enum"] == list(names.MASK_STRATEGIES)
    assert schema["continual"]["properties"]["methods"]["items"]["enum"] == list(names.SEQUENCE_METHODS)
    assert schema["merge"]["properties"]["methods"]["items"]["enum"] == list(names.MERGE_METHODS)


def test_a_run_name_says_whether_it_gives_a_rank():
    assert names.names_rank("lora_arc_easy_r8") and not names.names_rank("lora_arc_easy")
    assert not names.names_rank("fft_gsm8k") and not names.names_rank("not a name")
