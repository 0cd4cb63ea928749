"""What a path string names: a local file (plain path or ``file://``) or an object in a remote store
(``s3://``, ``gs://``, ``https://``/``http://``), and path arithmetic that works for both."""

from __future__ import annotations

import os
import posixpath
from urllib.parse import unquote, urlsplit

REMOTE_SCHEMES = ("s3", "gs", "gcs", "http", "https")
READ_ONLY_SCHEMES = ("http", "https")


def scheme(path: str | os.PathLike) -> str:
    """'' for a plain local path, else the URI scheme (lower case)."""
    text = str(path)
    head, sep, _ = text.partition("://")
    return head.lower() if sep and head.isalnum() else ""


def is_remote(path: str | os.PathLike) -> bool:
    return scheme(path) in REMOTE_SCHEMES


def is_uri(path: str | os.PathLike) -> bool:
    return scheme(path) != ""


def local_path(path: str | os.PathLike) -> str:
    """A local path from a plain path or a ``file://`` URI (the path itself for anything else)."""
    text = str(path)
    if scheme(text) == "file":
        return unquote(urlsplit(text).path)
    return text


def join(base: str, rel: str) -> str:
    """``rel`` resolved against the folder ``base``: an absolute path or a URI is kept as given."""
    if is_uri(rel) or os.path.isabs(rel):
        return rel
    if is_remote(base):
        head, sep, tail = base.partition("://")
        bucket, _, key = tail.partition("/")
        return f"{head}{sep}{bucket}/" + posixpath.normpath(posixpath.join(key, rel))
    return os.path.normpath(os.path.join(local_path(base), rel))


def dirname(path: str) -> str:
    """The folder holding ``path`` (a URI stays a URI)."""
    if is_remote(path):
        head, sep, tail = path.rstrip("/").partition("://")
        return f"{head}{sep}{posixpath.dirname(tail)}"
    return os.path.dirname(os.path.abspath(local_path(path)))


def basename(path: str) -> str:
    return posixpath.basename(str(path).rstrip("/")) if is_remote(path) else os.path.basename(local_path(path))


def absolute(path: str | os.PathLike) -> str:
    """A URI unchanged, a local path (or file:// URI) made absolute."""
    text = str(path)
    return text if is_remote(text) else os.path.abspath(local_path(text))
