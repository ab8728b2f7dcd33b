"""Errors a user can cause or meet. The CLI turns them into one line on stderr and an exit code."""

from __future__ import annotations


class SegfactoryError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class InputError(SegfactoryError, ValueError):
    """Bad input or bad usage: a malformed file, an unknown name, an out-of-range value (exit code 2)."""

    exit_code = 2


class RunError(SegfactoryError, RuntimeError):
    """A run that failed for a reason the message explains (exit code 1)."""

    exit_code = 1
