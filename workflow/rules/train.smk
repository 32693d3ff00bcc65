# Dense calibration run -> task vector -> mask -> sparse adaptation from the base weights;
# the LoRA baseline, adapters trained on the frozen base; and RoSA, both at once.
# A mask may also rank the base model's gradients (fisher), its weights, or random scores.
# One dense run and one task vector per task serve every sparsity. The dense run is the FFT
# baseline (fft_<task>) unless train.calibration gives it another budget (calibration_<task>).
# {task} in these paths is a replicate key, <task>[_seed<N>]: each seed has its own training data,
# dense run, task vector, gradient scores and masks (work/masks/<task>[_seed<N>]_s<percent>...).


rule train_dense:
    input:
        unpack(lambda wc: PLAN.dense_training_inputs(wc.dense, wc.task)),
        model_scope=model_scope_checked,
    output:
        weights="work/runs/{dense}_{task}/weights.safetensors",
        summary="work/runs/{dense}_{task}/summary.json",
        steps="work/runs/{dense}_{task}/log.jsonl",
    log:
        "logs/train/{dense}_{task}.log",
    benchmark:
        "benchmarks/train/{dense}_{task}.tsv"
    params:
        out=subpath(output.weights, parent=True),
        method="fft",
        options=lambda wc: PLAN.dense_train_options(wc.dense, wc.task),
    resources:
        **PLAN.resources("train"),
    conda:
        ENV
    shell:
        "python -m lota.train --processes {resources.processes} --checkpoint-every {resources.checkpoint_every}"
        " --method {params.method} --model {input.model:q} --data {input.data:q}"
        " --out {params.out:q} {params.options} {resources.tracking} > {log:q} 2>&1"


use rule train_dense as train_lota with:
    input:
        unpack(lambda wc: PLAN.run_training_inputs(f"lota_{wc.variant}")),
    output:
        weights="work/runs/lota_{variant}/weights.safetensors",
        summary="work/runs/lota_{variant}/summary.json",
        steps="work/runs/lota_{variant}/log.jsonl",
    log:
        "logs/train/lota_{variant}.log",
    benchmark:
        "benchmarks/train/lota_{variant}.tsv"
    params:
        method="lota",
        options=lambda wc: PLAN.run_train_options(f"lota_{wc.variant}"),


# RoSA: a LoRA adapter and the sparse update through a mask (by default the Fisher's), trained
# together; with rosa.mask_warmup_steps, the adapter trains alone first and the mask is built from
# the warmed-up model's gradients.
use rule train_dense as train_rosa with:
    input:
        unpack(lambda wc: PLAN.run_training_inputs(f"rosa_{wc.variant}")),
        model_scope=model_scope_checked,
    output:
        weights="work/runs/rosa_{variant}/weights.safetensors",
        adapter="work/runs/rosa_{variant}/adapter.safetensors",
        summary="work/runs/rosa_{variant}/summary.json",
        steps="work/runs/rosa_{variant}/log.jsonl",
    log:
        "logs/train/rosa_{variant}.log",
    benchmark:
        "benchmarks/train/rosa_{variant}.tsv"
    params:
        method="rosa",
        options=lambda wc: PLAN.rosa_options(f"rosa_{wc.variant}"),


use rule train_dense as train_lora with:
    input:
        unpack(lambda wc: PLAN.run_training_inputs(wc.lora_run)),
        model_scope=model_scope_checked,
    output:
        weights="work/runs/{lora_run}/weights.safetensors",
        summary="work/runs/{lora_run}/summary.json",
        steps="work/runs/{lora_run}/log.jsonl",
    log:
        "logs/train/{lora_run}.log",
    benchmark:
        "benchmarks/train/{lora_run}.tsv"
    params:
        method="lora",
        options=lambda wc: PLAN.run_train_options(wc.lora_run),


rule task_vector:
    input:
        base=BASE_MODEL,
        finetuned=lambda wc: f"work/runs/{PLAN.dense_run(wc.task)}/weights.safetensors",
    output:
        "work/task_vectors/{task}.safetensors",
    log:
        "logs/task_vector/{task}.log",
    benchmark:
        "benchmarks/task_vector/{task}.tsv"
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.task_vector --base {input.base:q} --finetuned {input.finetuned:q}"
        " --out {output:q} > {log:q} 2>&1"


rule extract_mask:
    input:
        task_vector="work/task_vectors/{task}.safetensors",
    output:
        "work/masks/{task}_s{percent}.safetensors",
    log:
        "logs/extract_mask/{task}_s{percent}.log",
    benchmark:
        "benchmarks/extract_mask/{task}_s{percent}.tsv"
    params:
        sparsity=lambda wc: names.percent_to_sparsity(wc.percent),
        options=PLAN.mask_options(),
        exclude="",
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.extract_mask --task-vector {input.task_vector:q} --out {output:q}"
        " --sparsity {params.sparsity} {params.options} {params.exclude} > {log:q} 2>&1"


# The base model's gradient scores on a few training batches: the fisher (mean_squared) and
# gradient_mean (mean) strategies' masks rank them.
rule fisher:
    input:
        model=BASE_MODEL,
        data=lambda wc: PLAN.replicate_train_data(wc.task),
        model_scope=model_scope_checked,
    output:
        "work/fisher/{task}_{fisher_kind}.safetensors",
    log:
        "logs/fisher/{task}_{fisher_kind}.log",
    benchmark:
        "benchmarks/fisher/{task}_{fisher_kind}.tsv"
    params:
        options=lambda wc: PLAN.fisher_options(wc.task),
        threads=PLAN.threads_option("train"),
        trust=PLAN.trust_option(),
    resources:
        **PLAN.resources("train"),
    conda:
        ENV
    shell:
        "python -m lota.fisher --model {input.model:q} --data {input.data:q} --kind {wildcards.fisher_kind:q}"
        " --out {output:q} {params.options} {params.threads} {params.trust} > {log:q} 2>&1"


# A mask ranked by another strategy than the task vector: same sparsity, same file format.
rule extract_mask_strategy:
    input:
        unpack(lambda wc: PLAN.mask_rule_inputs(wc.task, wc.strategy)),
    output:
        "work/masks/{task}_s{percent}_{strategy}.safetensors",
    log:
        "logs/extract_mask/{task}_s{percent}_{strategy}.log",
    benchmark:
        "benchmarks/extract_mask/{task}_s{percent}_{strategy}.tsv"
    wildcard_constraints:
        strategy="|".join(names.MASK_STRATEGIES[1:]),  # the task vector's mask is extract_mask's
    params:
        sparsity=lambda wc: names.percent_to_sparsity(wc.percent),
        options=lambda wc: PLAN.mask_rule_options(wc.task, wc.strategy),
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.extract_mask --out {output:q} --sparsity {params.sparsity} {params.options} > {log:q} 2>&1"
