"""One error hierarchy for every stage, with documented exit codes.

Every user-facing failure is an :class:`EdgekdError` subclass. The CLI prints ``error: <message>`` on one
line (``hint: <fix>`` after it when there is one) and exits with the class's ``exit_code``; a traceback is
shown only with ``--debug``.

| exit code | class                | meaning                                                  |
|-----------|----------------------|----------------------------------------------------------|
| 1         | (uncaught bug)       | an internal error: please report it with ``--debug``     |
| 2         | UsageError           | bad command line or recipe                               |
| 3         | InputFileError       | a file is missing, unreadable, corrupt or of wrong kind  |
| 4         | SecurityError        | a file tries something unsafe (pickle code, path escape) |
| 5         | VerificationError    | an artifact failed its gate (parity, accuracy, checksum) |
| 6         | TrainingError        | training diverged (non-finite loss or weights)           |
| 7         | DependencyError      | an optional package is missing                           |
| 8         | ResourceError        | out of disk, file too large, no device                   |
| 9         | ResumeError          | a checkpoint cannot be resumed with this recipe/data     |
"""

from __future__ import annotations

#: a message quotes what a user gave (keys, names, paths): a run of more than this many characters without a
#: space is shortened, and a message longer than MAX_MESSAGE is cut — 100 KB of stderr helps nobody
MAX_WORD, MAX_MESSAGE = 200, 4000


def clip(text: str) -> str:
    """``text`` with every over-long word (a quoted value, a path) and the whole shortened, saying how long
    each was.

    Example:
        >>> clip("unknown key '" + "k" * 1000 + "': did you mean …")[-54:]
        "…[1003 characters]…kkkkkkkkkkkkkkkkkk': did you mean …"
    """
    import re

    long_word = re.compile(rf"\S{{{MAX_WORD + 1},}}")
    text = long_word.sub(lambda m: f"{m[0][:100]}…[{len(m[0])} characters]…{m[0][-20:]}", text)
    return text if len(text) <= MAX_MESSAGE else f"{text[:MAX_MESSAGE]}… ({len(text)} characters)"


class EdgekdError(Exception):
    """Base of every error edgekd reports to a user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        message, hint = clip(message), clip(hint) if hint else hint
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(EdgekdError):
    exit_code = 2


class RecipeError(UsageError):
    """A recipe is invalid. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[str], source: str = "recipe", hint: str | None = None):
        self.problems = list(problems)
        joined = "; ".join(self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s): {joined}", hint)


class InputFileError(EdgekdError):
    exit_code = 3


class SecurityError(EdgekdError):
    exit_code = 4


class VerificationError(EdgekdError):
    exit_code = 5


class ToleranceExceeded(VerificationError):
    """A converted model's outputs differ from the reference by more than the tolerance."""


class ShapeMismatch(VerificationError):
    """A converted model's output shape differs from the reference."""


class ChecksumMismatch(VerificationError):
    """A bundle file does not match its SHA256SUMS entry."""


class TrainingError(EdgekdError):
    exit_code = 6


class NonFiniteError(TrainingError):
    """A loss term or a weight became NaN/Inf."""


class DependencyError(EdgekdError):
    exit_code = 7


class ResourceError(EdgekdError):
    exit_code = 8


class ResumeError(EdgekdError):
    exit_code = 9


EXIT_CODES = {
    cls.__name__: cls.exit_code
    for cls in (UsageError, InputFileError, SecurityError, VerificationError, TrainingError,
                DependencyError, ResourceError, ResumeError)
}


def require(module: str, extra: str, purpose: str):
    """Import an optional module or raise :class:`DependencyError` with the install command.

    Example:
        >>> ort = require("onnxruntime", "ort", "running ONNX models")  # doctest: +SKIP
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(
            f"{purpose} needs the Python package '{module.split('.')[0]}', which is not installed ({exc})",
            hint=f"install it with: pip install 'edgekd[{extra}]'",
        ) from None
