"""Stage alpaca_eval: AlpacaEval win rate of a model's outputs on the AlpacaEval instructions.

The samples are the generate stage's completions on task `alpaca` (the 805 AlpacaEval
instructions, or a seeded subset of them); each is judged against the reference output of the
same instruction (local `alpaca_eval/gpt4_1106_preview_outputs.json`, else the hub) by
alpaca-eval's pairwise annotator, and alpaca-eval's metrics give the win rate (percent) with its
standard error, and the length-controlled win rate where the hub is reachable (its model
downloads a table from there).

Judges (lota.evaluation.alpaca_judge): any alpaca-eval annotator config (the default calls the OpenAI
API), or `local`, the same prompt and preference on a local causal LM.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lota.core.cli import arg, run_main, threads_arg, trust_remote_code_arg
from lota.core.errors import UserError
from lota.core.io import read_jsonl, write_json
from lota.core.modeling import set_threads
from lota.core.tracking import TrackingArgs, log_result
from lota.evaluation.alpaca_judge import (
    LOCAL_JUDGE,
    LOCAL_JUDGE_NAME,
    LocalJudge,
    check_api_judge,
    import_alpaca_eval,
    length_controlled,
    local_judge_config,
    paired_outputs,
)
from lota.evaluation.provenance import package_versions, parse_config_json
from lota.tasks import get_task
from lota.tasks.records import resolve_data_dir

log = logging.getLogger("lota.alpaca_eval")


@dataclass
class AlpacaEvalArgs(TrackingArgs):
    samples: Path = arg(help="samples JSONL of the model on the AlpacaEval instructions (task alpaca)")
    out: Path = arg(help="output results JSON")
    judge: str = arg("weighted_alpaca_eval_gpt4_turbo", "an alpaca-eval annotator config (name or path), or 'local'")
    judge_model: Path | None = arg(None, "the local judge's HF model directory")
    data_dir: Path | None = arg(None, "local data folder with alpaca_eval/; none: $LOTA_DATA_DIR, else the hub")
    annotations: Path | None = arg(None, "also write each instruction's outputs and preference as JSON")
    name: str = arg("", "the model's name in the pipeline, e.g. lota_alpaca_s90")
    seed: int = arg(0, "seed of the judge's random output order")
    config_json: str = arg("{}", "the config values used, as JSON")
    threads: int = threads_arg()
    trust_remote_code: bool = trust_remote_code_arg()


def judge_outputs(args: AlpacaEvalArgs) -> dict[str, Any]:
    version = import_alpaca_eval()
    import pandas as pd
    from alpaca_eval.annotators.pairwise_evaluator import PairwiseAnnotatorLocal
    from alpaca_eval.metrics import get_winrate

    config = parse_config_json(args.config_json)
    samples = read_jsonl(args.samples, "samples")
    if not samples:
        raise UserError(f"no samples to judge in {args.samples}")
    references = get_task("alpaca").load("test", resolve_data_dir(args.data_dir))
    name = args.name or args.samples.stem
    ids, reference_outputs, model_outputs = paired_outputs(samples, references, args.samples, name)
    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        if args.judge == LOCAL_JUDGE:
            if args.judge_model is None:
                raise UserError("the local AlpacaEval judge needs a model (config key alpaca_eval.judge_model)")
            annotator = PairwiseAnnotatorLocal(
                annotators_config=local_judge_config(Path(folder)),
                fn_completions=LocalJudge(args.judge_model, args.trust_remote_code),
                seed=args.seed,
            )
        else:
            check_api_judge(args.judge)
            annotator = PairwiseAnnotatorLocal(annotators_config=args.judge, seed=args.seed)
        started = time.perf_counter()
        annotated = annotator.annotate_head2head(outputs_1=reference_outputs, outputs_2=model_outputs, is_ordered=True)
        judge_wall_s = time.perf_counter() - started
    # Indexed by each instruction's position among the 805, which the length-controlled model looks up.
    annotations = pd.DataFrame(annotated, index=ids)
    figures = {key: float(value) for key, value in get_winrate(annotations).items()}
    result = {
        "model": name,
        "judge": LOCAL_JUDGE_NAME if args.judge == LOCAL_JUDGE else args.judge,
        "judge_model": str(args.judge_model) if args.judge == LOCAL_JUDGE else None,
        "harness": "alpaca_eval",
        "harness_version": version,
        "reference": reference_outputs[0]["generator"],
        **figures,
        **length_controlled(annotations),
        "avg_length": sum(len(output["output"]) for output in model_outputs) / len(model_outputs),
        "reference_avg_length": sum(len(output["output"]) for output in reference_outputs) / len(reference_outputs),
        "generation_backend": samples[0].get("backend"),
        "judge_wall_s": judge_wall_s,
        "config": config,
        "versions": package_versions(),
    }
    if args.annotations is not None:
        columns = ["instruction", "output_1", "output_2", "generator_1", "generator_2", "preference"]
        rows = annotations[columns].rename(columns={"output_1": "reference_output", "output_2": "output"})
        write_json(
            args.annotations, [{"id": index, **row} for index, row in zip(ids, rows.to_dict("records"), strict=True)]
        )
    write_json(args.out, result)
    log_result(args, args.out, result)
    log.info(
        "%s: win rate %.2f%% (standard error %.2f) over %d instructions, judge %s",
        name,
        result["win_rate"],
        result["standard_error"],
        len(ids),
        result["judge"],
    )
    return result


def run(args: AlpacaEvalArgs) -> None:
    """Judge a model's AlpacaEval outputs against the reference outputs and write the win rate."""
    judge_outputs(args)


if __name__ == "__main__":
    run_main(AlpacaEvalArgs, run)
