"""The one error every video decoder raises, and the file checks that come before any decoder."""

from __future__ import annotations

import os


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded; the message names the file."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple:  # picklable across Ray workers despite the 2-arg __init__
        return (type(self), (self.path, self.reason))


def check_file(path: str) -> None:
    """Missing and empty files fail here, once: no decoder (first or fallback) can read them."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoDecodeError(path, "file not found") from None
    except OSError as e:
        raise VideoDecodeError(path, f"cannot stat file: {e}") from e
    if st.st_size == 0:
        raise VideoDecodeError(path, "empty (zero-byte) file")
