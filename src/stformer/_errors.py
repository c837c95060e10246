"""Errors for mistakes in the user's input, which the CLI prints as one line.

Anything else that goes wrong is a bug: the CLI shows its traceback and asks for a report.
"""

from __future__ import annotations


class InputError(ValueError):
    """A mistake in the user's data, files or settings; the message names the file, the field and the fix."""


class InputKeyError(InputError, KeyError):
    """A missing column, layer or key of the user's data (also a ``KeyError``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
