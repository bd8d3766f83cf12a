"""The errors carpool raises for a problem with what the user passed.

:class:`InputError` marks a problem with the user's input: the data (its contents, its
file, its format), an argument of a public function, an option value, a model, preset or
residual name, an incompatible combination of options. It subclasses :class:`ValueError`,
so library users who catch ``ValueError`` keep working unchanged; ``DataError`` (bad
trajectory data) and ``FitFileError`` (a fit file that fails its checksums) are
InputErrors.

Every other exception out of carpool (a plain ``ValueError``, ``KeyError``, ...) is an
internal error: a bug in carpool, never the user's fault. The ``carpool`` command line
reports an :class:`InputError` as one line and exit status 2, and anything else as an
internal error with its traceback written to a log file, exit status 1.
"""

from __future__ import annotations

__all__ = ["InputError", "UnknownNameError"]


class InputError(ValueError):
    """A problem with what the user passed (data, options, files).

    The message is one line that names the problem (and the row and group where it
    applies). A subclass of :class:`ValueError`: ``except ValueError`` still catches it.
    """


class UnknownNameError(InputError, KeyError):
    """An unknown name the user passed (a model, parameter, column, driver).

    Both an :class:`InputError` and a :class:`KeyError`, the type these lookups raised
    before, so ``except KeyError`` keeps working too. Like any ``KeyError``, ``str()``
    quotes the message; ``args[0]`` is the message itself.
    """
