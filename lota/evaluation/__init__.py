"""Evaluation, the library behind the scoring stages (evaluate, continual, evaluate_merge, lmeval,
alpaca_eval) and generation: scoring samples, a result's provenance, generating completions."""
