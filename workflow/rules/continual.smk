# Task sequences (continual learning): results/cl/<method>_<A>-<B>[-...][_s<percent>|_r<rank>].json.
# Stage 1 is the single-task run (fft_A, lora_A, lota_A_sNN); stage k trains the last task from the
# model after stage k-1 and is exported onto it. A LoTA method's stage-k mask comes from a
# calibration run from that model: a dense one (lota: any entries; lotto: only entries no earlier
# mask made trainable), or, for lottoflip, one that trains only those entries (the official
# code's flipped mask). Every stage's model is scored on every task of the sequence.


rule complement_mask:
    input:
        lambda wc: stage_masks(wc.model),
    output:
        "work/cl/complement_masks/{model}.safetensors",
    log:
        "logs/cl/complement_mask/{model}.log",
    benchmark:
        "benchmarks/cl/complement_mask/{model}.tsv"
    resources:
        **resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.complement_mask --masks {input:q} --out {output:q} > {log:q} 2>&1"


rule train_stage:
    input:
        unpack(sequence_stage_inputs),
    output:
        weights="work/cl/runs/{seq}/weights.safetensors",
        summary="work/cl/runs/{seq}/summary.json",
        steps="work/cl/runs/{seq}/log.jsonl",
    log:
        "logs/cl/train/{seq}.log",
    benchmark:
        "benchmarks/cl/train/{seq}.tsv"
    params:
        out=subpath(output.weights, parent=True),
        method=sequence_stage_method,
        mask=mask_option,
        options=sequence_stage_options,
    resources:
        **resources("train"),
    conda:
        ENV
    shell:
        "python -m lota.train --processes {resources.processes} --checkpoint-every {resources.checkpoint_every}"
        " --method {params.method} {params.mask} --model {input.model:q} --data {input.data:q}"
        " --out {params.out:q} {params.options} > {log:q} 2>&1"


use rule train_stage as calibrate_stage with:
    input:
        unpack(calibration_inputs),
    output:
        weights="work/cl/calibration/{kind}/{model}/{task}/weights.safetensors",
        summary="work/cl/calibration/{kind}/{model}/{task}/summary.json",
        steps="work/cl/calibration/{kind}/{model}/{task}/log.jsonl",
    log:
        "logs/cl/calibration/{kind}/{model}/{task}.log",
    benchmark:
        "benchmarks/cl/calibration/{kind}/{model}/{task}.tsv"
    params:
        method=lambda wc: "lota" if wc.kind == "flip" else "fft",
        options=lambda wc: train_options("calibration", wc.task, settings=later_stage_settings("calibration")),


use rule task_vector as stage_task_vector with:
    input:
        base=lambda wc: model_path(wc.model),
        finetuned="work/cl/calibration/{kind}/{model}/{task}/weights.safetensors",
    output:
        "work/cl/task_vectors/{kind}/{model}/{task}.safetensors",
    log:
        "logs/cl/task_vector/{kind}/{model}/{task}.log",
    benchmark:
        "benchmarks/cl/task_vector/{kind}/{model}/{task}.tsv"


use rule extract_mask as stage_mask with:
    input:
        unpack(sequence_mask_inputs),
    output:
        "work/cl/masks/{seq}.safetensors",
    log:
        "logs/cl/extract_mask/{seq}.log",
    benchmark:
        "benchmarks/cl/extract_mask/{seq}.tsv"
    params:
        sparsity=lambda wc: parse_sequence(wc.seq).sparsity,
        exclude=lambda wc, input: cli_options({"exclude": list(input.exclude)}) if input.exclude else "",


use rule export as export_stage with:
    input:
        base=lambda wc: model_path(stage_models(wc.seq)[-2]),
        weights="work/cl/runs/{seq}/weights.safetensors",
    output:
        directory("work/cl/models/{seq}"),
    log:
        "logs/cl/export/{seq}.log",
    benchmark:
        "benchmarks/cl/export/{seq}.tsv"


use rule generate as generate_on with:
    input:
        model=lambda wc: model_path(wc.model),
        data="work/data/{task}/eval.jsonl",
    output:
        "work/cl/samples/{model}/{task}.jsonl",
    log:
        "logs/cl/generate/{model}/{task}.log",
    benchmark:
        "benchmarks/cl/generate/{model}/{task}.tsv"
    params:
        max_new_tokens=lambda wc: task_setting(check_task(wc.task), "max_new_tokens"),


rule evaluate_sequence:
    input:
        samples=lambda wc: list(sequence_samples(wc).values()),
        summaries=sequence_summaries,
        masks=sequence_masks,
    output:
        "results/cl/{seq}.json",
    log:
        "logs/cl/evaluate/{seq}.log",
    benchmark:
        "benchmarks/cl/evaluate/{seq}.tsv"
    params:
        tasks=lambda wc: " ".join(parse_sequence(wc.seq).tasks),
        samples=lambda wc: " ".join(shlex.quote(f"{key}={path}") for key, path in sequence_samples(wc).items()),
        method=lambda wc: parse_sequence(wc.seq).method,
        shape=lambda wc: shape_options(parse_sequence(wc.seq).sparsity, parse_sequence(wc.seq).rank),
        base_model=config["base_model"]["source"],
        config_json=lambda wc: sequence_provenance(wc.seq),
        benchmarks=sequence_benchmarks,
    resources:
        **resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.continual --out {output:q} --run {wildcards.seq:q} --method {params.method}"
        " --tasks {params.tasks} --samples {params.samples} --train-summary {input.summaries:q}"
        " --mask {input.masks:q} {params.shape} --base-model {params.base_model:q}"
        " --config-json {params.config_json:q} --benchmark {params.benchmarks} > {log:q} 2>&1"
