"""Stage select_lr: the learning rate of a run whose method lists rates (train.<method>.lr), chosen
on the validation split from the base seed's run trained at each rate, e.g.
results/lr/lota_gsm8k_s90.json; every seed of the run trains at it (lota.training.lr_choice)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from lota.core.cli import arg, run_main
from lota.core.errors import UserError
from lota.core.io import read_json, write_json
from lota.training.lr_choice import choose_rate

log = logging.getLogger("lota.select_lr")


@dataclass
class SelectLrArgs:
    run: str = arg(help="the run whose rate is chosen, e.g. lota_gsm8k_s90")
    candidates: list[str] = arg(
        help="RATE=PATH of each candidate's validation result (lota.evaluate), in the config's order"
    )
    out: Path = arg(help="output JSON of the choice")


def parse_candidates(entries: list[str]) -> list[tuple[float, Path]]:
    pairs = []
    for entry in entries:
        rate, separator, path = entry.partition("=")
        if not separator or not path or not re.fullmatch(r"\d+(\.\d*)?(e-?\d+)?", rate):
            raise UserError(f"--candidates expects RATE=PATH, got {entry!r}")
        pairs.append((float(rate), Path(path)))
    return pairs


def run(args: SelectLrArgs) -> None:
    """Choose the run's learning rate on its validation results and write the choice."""
    candidates = []
    for rate, path in parse_candidates(args.candidates):
        result = read_json(path, "validation result")
        if not isinstance(result, dict) or not {"accuracy", "correct", "n"} <= set(result):
            raise UserError(f"{path} is not a validation result: it lacks accuracy, correct or n")
        candidates.append((rate, result))
    choice = choose_rate(args.run, candidates)
    write_json(args.out, choice)
    for row in choice["candidates"]:
        log.info(
            "%s at lr %g: validation accuracy %.4f (%d/%d)",
            args.run,
            row["lr"],
            row["accuracy"],
            row["correct"],
            row["n"],
        )
    log.info("%s: lr %g chosen (%s) -> %s", args.run, choice["lr"], choice["rule"], args.out)


if __name__ == "__main__":
    run_main(SelectLrArgs, run)
