"""The experiment's vocabulary (run, sequence and merge names) and the plan: what each name builds."""
