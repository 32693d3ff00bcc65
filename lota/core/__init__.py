"""The foundations every other part builds on: errors, files, command lines, the config, models,
processes, scopes, model sources, the hub and experiment trackers."""
