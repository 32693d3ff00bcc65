"""The one exception type that stages raise for bad input."""


class UserError(Exception):
    """Bad input (config, path, shape): reported as one line naming the culprit, exit 1."""
