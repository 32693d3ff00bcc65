"""Stage model_scope: the mask scope and the LoRA targets checked against the base model before any
training, e.g. work/model_scope.json.

A scope (mask.scope) or target list (lora.target_modules) names modules; "auto" stands for every
matrix weight inside a numbered decoder layer, the attention and MLP projections whatever the
architecture calls them (lota.masks.projections). One that covers no weight of the model stops here,
naming the key and listing the model's projections, instead of in extract_mask after the dense
calibration run. The output records what each resolved to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lota.cli import arg, run_main
from lota.io import write_json
from lota.lora import TARGETS_KEY
from lota.masks import DEFAULT_SCOPE, SCOPE_KEY, projections, resolve_scope
from lota.modeling import open_checkpoint

log = logging.getLogger("lota.model_scope")


@dataclass
class ModelScopeArgs:
    model: Path = arg(help="base HF model directory")
    out: Path = arg(help="output JSON: the model's projections and what each setting covers")
    mask_scope: list[str] = arg(DEFAULT_SCOPE, "mask.scope: module names, or auto")
    lora_targets: list[str] = arg(DEFAULT_SCOPE, "lora.target_modules: module names, or auto")


def run(args: ModelScopeArgs) -> None:
    """Resolve both settings against the model's weights; stop where one covers none."""
    with open_checkpoint(args.model) as reader:
        shapes = reader.shapes()
    resolved = {
        key: {"configured": configured, "modules": resolve_scope(configured, shapes, key)}
        for key, configured in ((SCOPE_KEY, args.mask_scope), (TARGETS_KEY, args.lora_targets))
    }
    write_json(args.out, {"projections": projections(shapes)} | resolved)
    for key, found in resolved.items():
        log.info("%s %s covers %s", key, found["configured"], ", ".join(found["modules"]))


if __name__ == "__main__":
    run_main(ModelScopeArgs, run)
