"""Stage model_scope: the base model's weight shapes and projections, e.g. work/model_scope.json.

A scope (mask.scope) or target list (lora.target_modules) names modules; "auto" stands for every
matrix weight inside a numbered decoder layer, the attention and MLP projections whatever the
architecture calls them (lota.core.scope.projections). The workflow runs this stage as a checkpoint that
every training waits for: the plan then checks both settings against these shapes before any
training (lota.pipeline.plan.Plan.checked_model_scope), so one that covers no weight stops there, naming the
key and listing the model's projections, instead of in extract_mask after the dense calibration run.
The output is the model's alone, so a changed setting reruns neither this job nor the dense runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lota.core.cli import arg, run_main
from lota.core.io import write_json
from lota.core.modeling import open_checkpoint
from lota.core.scope import projections

log = logging.getLogger("lota.model_scope")


@dataclass
class ModelScopeArgs:
    model: Path = arg(help="base HF model directory")
    out: Path = arg(help="output JSON: the model's weight shapes and projections")


def run(args: ModelScopeArgs) -> None:
    with open_checkpoint(args.model) as reader:
        shapes = {name: list(shape) for name, shape in reader.shapes().items()}
    found = projections(shapes)
    log.info("%d weights; projections: %s", len(shapes), ", ".join(found))
    write_json(args.out, {"projections": found, "shapes": shapes})


if __name__ == "__main__":
    run_main(ModelScopeArgs, run)
