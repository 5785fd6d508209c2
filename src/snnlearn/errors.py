"""The error type for bad input: the CLI prints its message on one line and exits with status 2.

Library callers can catch it as the ``ValueError`` it is. Real bugs are not ``UserError``s and keep
their tracebacks.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: a malformed file, an option, a run directory, an unavailable device.
    The message names the bad value and, where there is one, the fix."""


def one_line(error: BaseException | str) -> str:
    """An error message squeezed onto one line (YAML and JSON errors span several)."""
    return " ".join(str(error).split())
