"""Read (and write) files and objects by path or URI through one filesystem layer: pyarrow.fs.

``s3://bucket/key`` (the standard AWS credential chain; ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``
point it at an S3-compatible store such as MinIO or Ceph), ``gs://bucket/key`` (Google's default
credentials; ``STORAGE_EMULATOR_HOST`` for an emulator), ``https://`` and ``http://`` (read-only, the standard library), ``file://`` and plain local
paths. Every failure is a ``StorageError``: one line naming the URI and what to do. docs/cluster_data.md
says why pyarrow.fs rather than fsspec.
"""

from __future__ import annotations

import http.client
import io
import os
import threading
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from pyarrow.lib import ArrowException

from components.io.errors import NOT_FOUND, StorageError, classify
from components.io.uri import READ_ONLY_SCHEMES, is_remote, local_path, scheme

CONNECT_TIMEOUT_S = 5.0  # an unreachable endpoint fails in seconds, not after minutes of retries
REQUEST_TIMEOUT_S = 120.0
RETRY_ATTEMPTS = 3
GCS_RETRY_S = 20.0  # gs:// gives up after this long (its client counts time, not attempts)

# what a store call raises: OSError mostly, ArrowException for some of the GCS client's statuses
# (a credentials file that cannot be opened)
STORE_ERRORS = (OSError, ArrowException)

_lock = threading.Lock()
_filesystems: dict[tuple, object] = {}


def _endpoint() -> tuple[str, str] | None:
    """(host[:port][/path], scheme) of the S3 endpoint override, None for AWS itself."""
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.netloc + parts.path.rstrip("/"), parts.scheme or "https"


def s3_filesystem():
    """The process's S3 filesystem for the current environment (endpoint, region)."""
    import pyarrow.fs as pafs

    endpoint = _endpoint()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
    key = ("s3", endpoint, region)
    with _lock:
        if key not in _filesystems:
            kw: dict = {"connect_timeout": CONNECT_TIMEOUT_S, "request_timeout": REQUEST_TIMEOUT_S,
                        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=RETRY_ATTEMPTS)}
            if endpoint:
                kw["endpoint_override"], kw["scheme"] = endpoint
            if region or endpoint:  # an explicit region: no bucket-region lookup (S3-compatible stores have none)
                kw["region"] = region or "us-east-1"
            _filesystems[key] = pafs.S3FileSystem(**kw)
        return _filesystems[key]


def _gcs_emulator() -> str:
    """host:port of a GCS emulator (``STORAGE_EMULATOR_HOST``, the variable Google's own clients read), or ""."""
    host = os.environ.get("STORAGE_EMULATOR_HOST", "")
    return urlsplit(host if "://" in host else f"http://{host}").netloc if host else ""


def _gcs_filesystem():
    """The process's GCS filesystem: Google's default credentials, or an emulator (fake-gcs-server,
    gcp-storage-emulator) named by STORAGE_EMULATOR_HOST, anonymous over http. Retries are bounded: the
    client's own default keeps retrying a missing token or an unreachable endpoint for 15 minutes."""
    import datetime

    import pyarrow.fs as pafs

    emulator = _gcs_emulator()
    key = ("gs", emulator)
    with _lock:
        if key not in _filesystems:
            kw: dict = {"retry_time_limit": datetime.timedelta(seconds=GCS_RETRY_S)}
            if emulator:
                kw.update(endpoint_override=emulator, scheme="http", anonymous=True)
            _filesystems[key] = pafs.GcsFileSystem(**kw)
        return _filesystems[key]


def filesystem(uri: str):
    """(pyarrow FileSystem, path within it) for an s3://, gs:// or local path."""
    import pyarrow.fs as pafs

    s = scheme(uri)
    if s == "s3":
        return s3_filesystem(), uri.split("://", 1)[1]
    if s in ("gs", "gcs"):
        return _gcs_filesystem(), uri.split("://", 1)[1]
    if s in READ_ONLY_SCHEMES:
        raise StorageError(uri, "http(s) URLs are read-only here and cannot be listed or written",
                           "put the data in s3://, gs:// or a local folder")
    return pafs.LocalFileSystem(), os.path.abspath(local_path(uri))


def _http(uri: str, method: str = "GET"):
    req = urllib.request.Request(uri, method=method)
    try:
        return urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        raise classify(uri, OSError(f"HTTP status {e.code}")) from None
    except (urllib.error.URLError, OSError) as e:
        raise classify(uri, OSError(str(getattr(e, "reason", e)))) from None


def read_bytes(uri: str | os.PathLike) -> bytes:
    """The whole file or object; a short read (an object truncated while read) is an error."""
    uri = str(uri)
    if scheme(uri) in READ_ONLY_SCHEMES:
        with _http(uri) as r:
            expected = r.headers.get("Content-Length")
            try:
                data = r.read()
            except http.client.IncompleteRead as e:  # the server closed before Content-Length bytes
                data = e.partial
            except OSError as e:
                raise classify(uri, e) from None
        if expected is not None and len(data) != int(expected):
            raise StorageError(uri, f"truncated: {len(data)} of {expected} bytes read", "read it again")
        return data
    if not is_remote(uri):
        try:
            with open(local_path(uri), "rb") as f:
                return f.read()
        except OSError as e:
            raise classify(uri, e) from None
    fs, path = filesystem(uri)
    try:
        with fs.open_input_file(path) as f:
            expected = f.size()
            data = f.read()
    except STORE_ERRORS as e:
        raise classify(uri, e) from None
    if len(data) != expected:
        raise StorageError(uri, f"truncated: {len(data)} of {expected} bytes read", "read it again")
    return data


def open_input(uri: str | os.PathLike):
    """A seekable binary file: a pyarrow random-access file for object stores (ranged GETs), the bytes
    in memory for http(s), the open local file otherwise."""
    uri = str(uri)
    if scheme(uri) in READ_ONLY_SCHEMES:
        return io.BytesIO(read_bytes(uri))
    if not is_remote(uri):
        try:
            return open(local_path(uri), "rb")
        except OSError as e:
            raise classify(uri, e) from None
    fs, path = filesystem(uri)
    try:
        return fs.open_input_file(path)
    except STORE_ERRORS as e:
        raise classify(uri, e) from None


def _info(uri: str):
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    try:
        info = fs.get_file_info(path)
    except STORE_ERRORS as e:
        raise classify(uri, e) from None
    return info, pafs.FileType


def size(uri: str | os.PathLike) -> int:
    """Bytes of a file or object; StorageError when it is missing or cannot be reached."""
    uri = str(uri)
    if scheme(uri) in READ_ONLY_SCHEMES:
        with _http(uri, "HEAD") as r:
            return int(r.headers.get("Content-Length") or 0)
    if not is_remote(uri):
        try:
            st = os.stat(local_path(uri))
        except STORE_ERRORS as e:
            raise classify(uri, e) from None
        return st.st_size
    info, kind = _info(uri)
    if info.type != kind.File:
        raise StorageError(uri, NOT_FOUND, "check the path")
    return int(info.size)


def exists(uri: str | os.PathLike) -> bool:
    """Whether a file or object is there. An unreachable store or refused credentials raise
    StorageError: they are not an answer about the object."""
    try:
        size(uri)
    except StorageError as e:
        if e.missing:
            return False
        raise
    return True


def is_dir(uri: str | os.PathLike) -> bool:
    """A local folder, or a bucket prefix with at least one object below it."""
    uri = str(uri)
    if not is_remote(uri):
        return os.path.isdir(local_path(uri))
    if scheme(uri) in READ_ONLY_SCHEMES:
        return False
    return bool(list_files(uri, limit=1))


def list_files(uri: str | os.PathLike, suffixes: tuple[str, ...] = (), limit: int = 0) -> list[str]:
    """Every file below a folder or bucket prefix (recursive, sorted), as URIs of the same scheme;
    ``suffixes`` (lower case, with the dot) keeps matching names only."""
    import pyarrow.fs as pafs

    uri = str(uri)
    fs, path = filesystem(uri)
    base = uri.rstrip("/") if is_remote(uri) else path
    try:
        infos = fs.get_file_info(pafs.FileSelector(path.rstrip("/"), recursive=True, allow_not_found=True))
    except STORE_ERRORS as e:
        raise classify(uri, e) from None
    root = path.rstrip("/")
    out = []
    for info in infos:
        if info.type != pafs.FileType.File or (suffixes and not info.path.lower().endswith(suffixes)):
            continue
        out.append(base + info.path[len(root):])
        if limit and len(out) >= limit:
            break
    return sorted(out)


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    """Write a whole file or object, all or nothing: a local file goes to a temporary name in its folder
    and is renamed into place; an object is one PUT, which the store makes visible only once complete."""
    uri = str(uri)
    if not is_remote(uri):
        path = local_path(uri)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    fs, path = filesystem(uri)
    try:
        with fs.open_output_stream(path) as f:
            f.write(data)
    except STORE_ERRORS as e:
        raise classify(uri, e) from None


def delete(uri: str | os.PathLike) -> None:
    """Remove a file or object if it is there."""
    uri = str(uri)
    if not is_remote(uri):
        if os.path.exists(local_path(uri)):
            os.unlink(local_path(uri))
        return
    fs, path = filesystem(uri)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass
    except STORE_ERRORS as e:
        raise classify(uri, e) from None


def as_new_file(path: str | os.PathLike) -> None:
    """Give a local file the mode a file created here normally gets (0666 less the umask: 0644 usually).
    Writers that create owner-only files (mkstemp, safetensors: 0600) would otherwise hide what is renamed
    into place from a worker running as another user on a shared disk."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
