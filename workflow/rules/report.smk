# The sweep's, the task sequences', the merges' and the harnesses' results -> results/report.md: the
# paper's claims answered over seeds where the results hold them (lota.analysis.claims); per sweep task a table
# and an accuracy-vs-sparsity plot, per task sequence a forgetting table and bar plot, per merged task
# set a merge table, each with its comparisons over seeds and items (and the masks' agreement across
# seeds); then the lm-eval and AlpacaEval tables.


rule report:
    input:
        results=sweep_results,
        sequences=continual_results,
        merges=merge_results,
        lmeval=lmeval_results,
        alpaca_eval=alpaca_eval_results,
        masks=lambda wc: PLAN.report_masks(),
        sequence_masks=lambda wc: PLAN.report_sequence_masks(),
    output:
        table=report("results/report.md", category="Report", caption="../report/table.rst"),
        plots=report(
            expand(f"{PLOTS}/{{task}}.png", task=config["sweep"]["tasks"]),
            category="Sweep",
            caption="../report/accuracy.rst",
        ),
        forgetting=report(
            expand(f"{PLOTS}/forgetting_{{tasks}}.png", tasks=["-".join(s) for s in config["continual"]["sequences"]]),
            category="Continual learning",
            caption="../report/forgetting.rst",
        ),
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    params:
        plots=lambda wc, output: os.path.join(os.path.dirname(output.table), os.path.basename(PLOTS)),
        pairs=cli_options({"pairs": PLAN.report_pairs()}) if PLAN.report_pairs() else "",
        benchmarks="benchmarks",  # every job's, whose wall times the claims section sums
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.report --results {input.results:q} --sequences {input.sequences:q} --merges {input.merges:q}"
        " --lmeval {input.lmeval:q} --alpaca-eval {input.alpaca_eval:q} --masks {input.masks:q}"
        " --sequence-masks {input.sequence_masks:q} {params.pairs}"
        " --benchmarks {params.benchmarks:q} --out {output.table:q} --plots {params.plots:q} > {log:q} 2>&1"
