"""The experiment's vocabulary: methods, mask strategies, merge methods, and the names of runs,
task sequences and merges, parsed and formatted in one place.

Every name is `<method>_<tasks>` followed by optional suffixes, each `_<letter(s)><value>` in a
fixed order:

    run       <method>_<task>[_s<percent>][_<strategy>][_r<rank>][_seed<N>]     lota_arc_easy_s90_random
    sequence  <method>_<task>-<task>[-...][_s<percent> | _r<rank>][_seed<N>]    lotto_gsm8k-mawps_s90_seed1
    merge     <method>_<task>+<task>[+...][_s<percent>][_l<lambda>][_seed<N>]   ties_gsm8k+mawps_l0.5

`_seed<N>` names a replicate: everything random in it (training order and subset, initialization,
dropout, random and DARE masks, sampling, its own calibration run and mask) draws from seed N; a
name without it is the config's base seed. The per-task work a replicate needs (its training data,
dense calibration run, task vector, gradient scores and masks) is keyed by its *replicate key*,
<task>[_seed<N>] (gsm8k_seed1).

Task names may contain underscores (arc_easy); a task is the shortest one that leaves the rest of
the name to parse as suffixes, and no part of a task name may itself look like a suffix
(check_task_name), so a name has one reading. A new suffix is one more entry in SUFFIXES and in
the kinds that take it.

Sparsity is written as a percentage of frozen entries, converted exactly (s99.9 is 0.999, not
0.9990000000000001); numbers print in their shortest form (90.0 is s90, 0.50 is l0.5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from lota.core.errors import UserError

# --- the vocabulary ---------------------------------------------------------------------

# Single-task runs: base (no training), fft (every weight), lora (adapters), lota (a mask's
# entries), rosa (adapters and a mask's entries together).
RUN_METHODS = ("base", "fft", "lora", "lota", "rosa")
TRAINED_METHODS = RUN_METHODS[1:]  # lota.train's --method
MASKED_METHODS = ("lota", "rosa")  # named with their mask's sparsity and strategy
ADAPTER_METHODS = ("lora", "rosa")  # trained with LoRA adapters of a rank
# What ranks a mask's entries (lota.extract_mask, lota.fisher). A run's mask is its method's
# default strategy's unless its name says otherwise.
MASK_STRATEGIES = ("task_vector", "fisher", "gradient_mean", "base_magnitude", "random")
DEFAULT_STRATEGY = {"lota": "task_vector", "rosa": "fisher"}
# The lota.fisher score kind behind each gradient strategy.
FISHER_KINDS = {"fisher": "mean_squared", "gradient_mean": "mean"}
SCORE_KINDS = tuple(FISHER_KINDS.values())  # lota.fisher's --kind


def ranking(strategy: str) -> str:
    """What lota.extract_mask ranks for a strategy (its --strategy): the gradient strategies rank
    lota.fisher's scores, of one kind or the other."""
    return "fisher" if strategy in FISHER_KINDS else strategy


RANKINGS = tuple(dict.fromkeys(map(ranking, MASK_STRATEGIES)))  # lota.extract_mask's --strategy
# How many entries a mask trains (lota.deltas.masks; lota.extract_mask's --rule): exactly, or the official code's rule.
MASK_RULES = ("exact", "official")
# Task sequences: lota retrains a mask at every stage; lotto keeps every stage's mask disjoint from
# the earlier ones; lottoflip too, through the official code's flipped-mask calibration.
SEQUENCE_METHODS = ("fft", "lora", "lota", "lotto", "lottoflip")
MASKED_SEQUENCE_METHODS = ("lota", "lotto", "lottoflip")
DISJOINT_METHODS = ("lotto", "lottoflip")
# Where a later stage's mask comes from: a dense calibration run, or (lottoflip) one that trains only
# the entries no earlier mask made trainable.
CALIBRATION_KINDS = ("dense", "flip")


def calibration_method(kind: str) -> str:
    """What a calibration of `kind` trains with: every weight, or (flip) the complement mask's entries."""
    return "lota" if kind == "flip" else "fft"


# Merges: the name's method -> lota.merge's --method. ta, ties, dareties and darelinear merge the
# tasks' FFT runs; lotasum adds their LoTA runs' sparse deltas.
MERGE_METHODS = {
    "ta": "task_arithmetic",
    "ties": "ties",
    "dareties": "dare_ties",
    "darelinear": "dare_linear",
    "lotasum": "sparse_sum",
}

# --- the grammar ------------------------------------------------------------------------

NUMBER = r"(?:0|[1-9]\d*)(?:\.\d*[1-9])?"  # no leading or trailing zeros: one spelling per number
TASK = r"[a-z][a-z0-9_]*?"
SUFFIXES = {
    "percent": rf"_s(?P<percent>{NUMBER})",
    "strategy": rf"_(?P<strategy>{'|'.join(MASK_STRATEGIES)})",
    "rank": r"_r(?P<rank>[1-9]\d*)",
    "scale": rf"_l(?P<scale>{NUMBER})",
    "seed": r"_seed(?P<seed>0|[1-9]\d*)",
}
# What a task name's part may not be: a suffix's shape (s90, r16, l0.5, seed1) or a strategy's name.
SUFFIX_LIKE = re.compile(rf"(?:[srl]{NUMBER}|seed\d+|{'|'.join(MASK_STRATEGIES)})")
SEED_SUFFIX = re.compile(rf"(?P<stem>.+?){SUFFIXES['seed']}")


def _grammar(methods: tuple[str, ...] | dict[str, str], tasks: str, *suffixes: str) -> re.Pattern[str]:
    optional = "".join(f"(?:{SUFFIXES[name]})?" for name in suffixes)
    return re.compile(rf"(?P<method>{'|'.join(methods)})_(?P<tasks>{tasks}){optional}")


RUN_GRAMMAR = _grammar(RUN_METHODS, TASK, "percent", "strategy", "rank", "seed")
SEQUENCE_GRAMMAR = _grammar(SEQUENCE_METHODS, rf"{TASK}(?:-{TASK})+", "percent", "rank", "seed")
MERGE_GRAMMAR = _grammar(MERGE_METHODS, rf"{TASK}(?:\+{TASK})+", "percent", "scale", "seed")
# A run of the engine benchmark (lota.bench): a method and its shape, on no task.
ENGINE_RUN_GRAMMAR = re.compile(
    rf"(?P<method>{'|'.join(TRAINED_METHODS)})(?:{SUFFIXES['percent']})?(?:{SUFFIXES['rank']})?"
)
RUN_NAMES = (
    "base_<task>, fft_<task>, lora_<task>[_r<rank>], lota_<task>_s<percent>[_<strategy>] or"
    " rosa_<task>_s<percent>[_<strategy>], each with an optional _seed<N>"
)
SEQUENCE_NAMES = (
    "<method>_<task>-<task>[-...][_seed<N>]: fft_..., lora_...[_r<rank>], or lota_/lotto_/lottoflip_..._s<percent>"
)
MERGE_NAMES = (
    "<method>_<task>+<task>[+...][_l<lambda>][_seed<N>]: ta_, ties_, dareties_, darelinear_...,"
    " or lotasum_..._s<percent>"
)
# Wildcard patterns of the names in the workflow's paths: loose (a name is checked when parsed),
# but enough to tell the kinds apart (a sequence's tasks join with -, a merge's with +).
TASK_PATTERN = r"[a-z][a-z0-9_]*"
RUN_PATTERN = r"[a-z][a-z0-9_.]*"
LORA_RUN_PATTERN = r"lora_[a-z][a-z0-9_]*"
SEQUENCE_PATTERN = r"[a-z][a-z0-9_.]*-[a-z0-9_.-]+"
MODEL_PATTERN = r"[a-z][a-z0-9_.-]*"  # a run or a sequence
MERGE_PATTERN = r"[a-z][a-z0-9_.]*\+[a-z0-9_.+]+"
NAME_PATTERN = r"[a-z][a-z0-9_.+-]*"  # any model: a run, a sequence or a merge
MASK_VARIANT_PATTERN = rf"{TASK}_s{NUMBER}(?:_(?:{'|'.join(MASK_STRATEGIES)}))?(?:_seed\d+)?"
SEED_PATTERN = r"0|[1-9]\d*"
DENSE_RUN_KINDS = ("fft", "calibration")  # the dense runs: the FFT baseline, or a calibration of its own


def check_task_name(task: str) -> str:
    """`task` if it can be part of a name with one reading: lower case, and no part (between
    underscores) shaped like a suffix."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", task) or "__" in task or task.endswith("_"):
        raise UserError(f"task name {task!r}: use lower-case letters, digits and single underscores")
    part = next((part for part in task.split("_")[1:] if SUFFIX_LIKE.fullmatch(part)), None)
    if part is not None:
        raise UserError(f"task name {task!r}: its part {part!r} reads as a name suffix; rename the task")
    return task


def seed_suffix(seed: int | None) -> str:
    """A name's _seed<N>, or nothing for the base seed (None)."""
    return "" if seed is None else f"_seed{seed}"


def split_seed(name: str) -> tuple[str, int | None]:
    """A name (or replicate key) without its _seed<N>, and N (None where it has none):
    lota_gsm8k_s90_seed2 -> (lota_gsm8k_s90, 2)."""
    match = SEED_SUFFIX.fullmatch(name)
    return (match["stem"], int(match["seed"])) if match else (name, None)


def _seed(match: re.Match[str]) -> int | None:
    return int(match["seed"]) if match["seed"] else None


def percent_to_sparsity(percent: str) -> float:
    """The sparsity of a name's s<percent>, exactly: s99.9 is 0.999."""
    sparsity = float(Decimal(percent) / 100)
    if not 0 <= sparsity < 1:
        raise UserError(f"sparsity s{percent} is {sparsity}, outside [0, 1): use s0 to s99.9")
    return sparsity


def number_name(number: float | int | str) -> str:
    """The name form of a number (a sparsity percentage, a merge's lambda): 90 and 90.0 are 90,
    99.9 stays 99.9, 0.50 is 0.5."""
    return format(Decimal(str(number)).normalize(), "f")


# --- single-task runs -------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A single-task run: sparsity, percent and strategy are a masked method's (lota, rosa), rank
    an adapter method's (lora, rosa), resolved to the configured rank where the name gives none."""

    method: str
    task: str
    percent: str | None = None
    strategy: str | None = None
    rank: int | None = None
    named_rank: bool = False  # whether the name carries _r<rank>
    seed: int | None = None  # the name's _seed<N>; None: the config's base seed

    @property
    def sparsity(self) -> float | None:
        return percent_to_sparsity(self.percent) if self.percent is not None else None

    @property
    def name(self) -> str:
        name = f"{self.method}_{self.task}"
        if self.percent is not None:
            name += f"_s{self.percent}"
        if self.strategy is not None and self.strategy != DEFAULT_STRATEGY[self.method]:
            name += f"_{self.strategy}"
        return name + (f"_r{self.rank}" if self.named_rank else "") + seed_suffix(self.seed)

    @property
    def replicate(self) -> str:
        """The key of the per-task work this run's replicate needs: <task>[_seed<N>]."""
        return self.task + seed_suffix(self.seed)

    @property
    def mask(self) -> str:
        """The stem of a masked run's mask file, shared by every run through the same mask."""
        return mask_name(self.replicate, self.percent, self.strategy)


def names_rank(name: str) -> bool:
    """Whether a run's name gives its adapters' rank (lora_<task>_r<rank>): another rank than the configured one."""
    match = RUN_GRAMMAR.fullmatch(name)
    return bool(match and match["rank"])


# A single-task mask's file stem, as mask_name writes it.
MASK_NAME_GRAMMAR = re.compile(
    rf"(?P<task>{TASK})(?:{SUFFIXES['seed']})?{SUFFIXES['percent']}(?:{SUFFIXES['strategy']})?"
)


def mask_name(replicate: str, percent: str, strategy: str) -> str:
    """A single-task mask's file stem: <task>[_seed<N>]_s<percent>, with _<strategy> unless the task vector's."""
    return f"{replicate}_s{percent}" + ("" if strategy == "task_vector" else f"_{strategy}")


def parse_run(name: str, configured_rank: int) -> Run:
    """The Run a name stands for; `configured_rank` is the rank of adapters whose name gives none."""
    match = RUN_GRAMMAR.fullmatch(name)
    method = match["method"] if match else None
    masked = method in MASKED_METHODS
    if (
        not match
        or masked != bool(match["percent"])
        or match["strategy"]
        and not masked
        or match["rank"]
        and method != "lora"
    ):
        raise UserError(f"run name {name!r} is not {RUN_NAMES}")
    task = check_task_name(match["tasks"])
    strategy = None
    if masked:
        strategy = match["strategy"] or DEFAULT_STRATEGY[method]
        if match["strategy"] == DEFAULT_STRATEGY[method]:
            raise UserError(f"run {name!r}: {strategy} is {method}'s own mask strategy: drop _{strategy}")
    rank = None
    if method in ADAPTER_METHODS:
        rank = int(match["rank"] or configured_rank)
        if match["rank"] and rank == configured_rank:
            raise UserError(
                f"run {name!r}: rank {rank} is the configured one (config key lora.rank): name it {method}_{task}"
            )
    if match["percent"]:
        percent_to_sparsity(match["percent"])
    return Run(method, task, match["percent"], strategy, rank, named_rank=bool(match["rank"]), seed=_seed(match))


@dataclass(frozen=True)
class EngineRun:
    """A run of the engine benchmark: sparsity is a masked method's, rank an adapter method's where
    the name gives one (None: the benchmark's --lora-rank)."""

    method: str
    percent: str | None = None
    rank: int | None = None

    @property
    def sparsity(self) -> float | None:
        return percent_to_sparsity(self.percent) if self.percent is not None else None


def parse_engine_run(name: str) -> EngineRun:
    """The EngineRun a benchmark run's name (fft, lora_r8, lota_s90, rosa_s99_r4) stands for."""
    match = ENGINE_RUN_GRAMMAR.fullmatch(name)
    if (
        not match
        or (match["method"] in MASKED_METHODS) != bool(match["percent"])
        or match["rank"]
        and match["method"] not in ADAPTER_METHODS
    ):
        raise UserError(
            f"unknown run {name!r}; expected fft, lora[_r<rank>], lota_s<percent> or rosa_s<percent>[_r<rank>]"
        )
    if match["percent"]:
        percent_to_sparsity(match["percent"])
    return EngineRun(match["method"], match["percent"], int(match["rank"]) if match["rank"] else None)


# --- task sequences ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sequence:
    """A task sequence: its tasks in training order; sparsity is its masks' (LoTA methods), rank its
    adapters' (lora), resolved to the configured rank where the name gives none."""

    method: str
    tasks: tuple[str, ...]
    percent: str | None = None
    rank: int | None = None
    named_rank: bool = False
    seed: int | None = None

    @property
    def sparsity(self) -> float | None:
        return percent_to_sparsity(self.percent) if self.percent is not None else None

    @property
    def suffix(self) -> str:
        """What every stage's name ends with: _s<percent>, _r<rank> or nothing, then _seed<N>."""
        if self.percent is not None:
            shape = f"_s{self.percent}"
        else:
            shape = f"_r{self.rank}" if self.named_rank else ""
        return shape + seed_suffix(self.seed)

    def replicate(self, task: str) -> str:
        """The replicate key of one of its tasks: <task>[_seed<N>]."""
        return task + seed_suffix(self.seed)

    @property
    def name(self) -> str:
        return f"{self.method}_{'-'.join(self.tasks)}{self.suffix}"

    @property
    def training_method(self) -> str:
        """What the stages train with: fft, lora, or lota (every LoTA method)."""
        return "lota" if self.method in MASKED_SEQUENCE_METHODS else self.method

    @property
    def calibration_kind(self) -> str:
        """Where a later stage's mask comes from: a dense run, or (lottoflip) a run on the complement."""
        return CALIBRATION_KINDS[self.method == "lottoflip"]

    def single_task_run(self, task: str) -> str:
        """The single-task run of its training method and shape on `task` (LoTTO's is plain LoTA's)."""
        return f"{self.training_method}_{task}{self.suffix}"

    @property
    def stage_models(self) -> list[str]:
        """The model after each stage: stage 1 is the single-task run, stage k the sequence of the
        first k tasks."""
        return [self.single_task_run(self.tasks[0])] + [
            f"{self.method}_{'-'.join(self.tasks[:k])}{self.suffix}" for k in range(2, len(self.tasks) + 1)
        ]


def parse_sequence(name: str, configured_rank: int) -> Sequence:
    """The Sequence a name stands for; `configured_rank` as for parse_run."""
    match = SEQUENCE_GRAMMAR.fullmatch(name)
    if not match:
        raise UserError(f"sequence run name {name!r} is not {SEQUENCE_NAMES}")
    method, tasks = match["method"], tuple(map(check_task_name, match["tasks"].split("-")))
    if len(set(tasks)) < len(tasks):
        raise UserError(f"sequence {name!r} names a task twice")
    if method in MASKED_SEQUENCE_METHODS and not match["percent"]:
        raise UserError(f"sequence {name!r}: {method} needs the masks' sparsity, e.g. {name}_s90")
    if match["percent"] and method not in MASKED_SEQUENCE_METHODS or match["rank"] and method != "lora":
        raise UserError(
            f"sequence {name!r}: _s<percent> is for {', '.join(MASKED_SEQUENCE_METHODS)}, _r<rank> for lora"
        )
    if match["percent"] and match["rank"]:
        raise UserError(f"sequence run name {name!r} is not {SEQUENCE_NAMES}")
    rank = None
    if method == "lora":
        rank = int(match["rank"] or configured_rank)
        if match["rank"] and rank == configured_rank:
            raise UserError(
                f"sequence {name!r}: rank {rank} is the configured one (config key lora.rank): drop _r{rank}"
            )
    if match["percent"]:
        percent_to_sparsity(match["percent"])
    return Sequence(method, tasks, match["percent"], rank, named_rank=bool(match["rank"]), seed=_seed(match))


# --- merges -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Merge:
    """A merge of single-task runs: sparsity is lotasum's LoTA runs', scale the merge's lambda,
    resolved to the configured one where the name gives none."""

    method: str
    tasks: tuple[str, ...]
    percent: str | None = None
    scale: float = 1.0
    named_scale: str | None = None  # the name's _l<lambda>, as written
    seed: int | None = None

    @property
    def sparsity(self) -> float | None:
        return percent_to_sparsity(self.percent) if self.percent is not None else None

    @property
    def name(self) -> str:
        name = f"{self.method}_{'+'.join(self.tasks)}"
        if self.percent is not None:
            name += f"_s{self.percent}"
        return name + (f"_l{self.named_scale}" if self.named_scale is not None else "") + seed_suffix(self.seed)

    @property
    def runs(self) -> list[str]:
        """The single-task runs merged, of the same replicate: the LoTA runs for lotasum, the FFT runs otherwise."""
        shape = f"_s{self.percent}" if self.method == "lotasum" else ""
        method = "lota" if self.method == "lotasum" else "fft"
        return [f"{method}_{task}{shape}{seed_suffix(self.seed)}" for task in self.tasks]


def parse_merge(name: str, configured_scale: float) -> Merge:
    """The Merge a name stands for; `configured_scale` is the lambda of a name without _l<lambda>."""
    match = MERGE_GRAMMAR.fullmatch(name)
    if not match:
        raise UserError(f"merge name {name!r} is not {MERGE_NAMES}")
    method, tasks = match["method"], tuple(map(check_task_name, match["tasks"].split("+")))
    if len(set(tasks)) < len(tasks):
        raise UserError(f"merge {name!r} names a task twice")
    if (method == "lotasum") != bool(match["percent"]):
        raise UserError(f"merge {name!r}: lotasum needs its LoTA runs' sparsity (_s<percent>), the others none")
    scale = float(match["scale"]) if match["scale"] else configured_scale
    if match["scale"] and scale in (0, configured_scale):
        reason = "is the configured one (config key merge.scale)" if scale else "would merge nothing"
        raise UserError(f"merge {name!r}: lambda {scale:g} {reason}: drop _l{match['scale']}")
    if match["percent"]:
        percent_to_sparsity(match["percent"])
    return Merge(method, tasks, match["percent"], scale, match["scale"], seed=_seed(match))


# --- any model ----------------------------------------------------------------------------


def is_sequence(name: str) -> bool:
    return "-" in name


def is_merge(name: str) -> bool:
    return "+" in name
