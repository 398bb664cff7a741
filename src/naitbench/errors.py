"""The user's mistakes, told apart from the suite's own failures.

An error that is also a `UserError` (a bad config value, a bad input record, a missing input,
an unknown name) is reported by every command in a line or two, with no traceback
(naitbench.cli); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave (config, data, model, names): the message says where
    and what would be accepted."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work; the message says which key and why."""
