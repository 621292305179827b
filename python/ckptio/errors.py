"""Exceptions raised by ckptio: one class per error code, all subclasses of :class:`Error`.

``str(e)`` is the same one-line ``<code>: <message>`` the CLI prints, naming the file, tensor and
byte offset where they are known; ``e.code`` is the code as a string (``"corrupt"``, ...).
"""

from __future__ import annotations

import builtins


class Error(Exception):
    """Base class of every ckptio error."""

    code: str = "internal"


class InvalidArgumentError(Error, ValueError):
    code = "invalid_argument"


class NotFoundError(Error, FileNotFoundError):
    code = "not_found"


class CorruptError(Error):
    code = "corrupt"


class UnsupportedError(Error):
    code = "unsupported"


class UnsafeError(Error):
    code = "unsafe"


class IoError(Error, OSError):
    code = "io_error"


class NoSpaceError(IoError):
    code = "no_space"


class AlreadyExistsError(Error, FileExistsError):
    code = "already_exists"


class MismatchError(Error):
    code = "mismatch"


class InternalError(Error):
    code = "internal"


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 (subclasses the builtin)
    """A collective or wait exceeded the caller's bound (a rank never arrived)."""

    code = "timeout"


_BY_CODE = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        CorruptError,
        UnsupportedError,
        UnsafeError,
        IoError,
        NoSpaceError,
        AlreadyExistsError,
        MismatchError,
        InternalError,
        TimeoutError,
    )
}


def error_class(code: str) -> type[Error]:
    """The class the C++ core raises for ``code`` (used by the extension's error translator)."""
    return _BY_CODE.get(code, InternalError)


__all__ = ["Error", "error_class"] + [cls.__name__ for cls in _BY_CODE.values()]
