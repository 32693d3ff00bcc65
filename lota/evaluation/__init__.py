"""Evaluation, the library behind the scoring stages (evaluate, continual, evaluate_merge, lmeval,
alpaca_eval) and generation: scoring samples, forgetting over a task sequence, a result's provenance,
generating completions, the harnesses' offline tasks."""
