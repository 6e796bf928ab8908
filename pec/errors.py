"""The root of every exception PEC raises on purpose.

Each package derives its own root from :class:`PecError` and draws its tree in its module
docstring (``psi.errors``, ``consent.errors``, ...). Messages never carry keys, secrets or raw
identifiers: they name files, rows, fields and stages instead.

    PecError
    ├── InputError (ValueError)       bad user input: file, row, column
    └── ConfigurationError (ValueError)  bad settings
"""

from __future__ import annotations


class PecError(Exception):
    """Root of all PEC errors."""


class InputError(PecError, ValueError):
    """User input is unusable: a missing file, column, or a malformed value.

    The message says what is wrong and where (file, row, column), never the value itself.
    """


class ConfigurationError(PecError, ValueError):
    """A setting is missing, malformed or unsafe."""
