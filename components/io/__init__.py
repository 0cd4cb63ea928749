"""Paths and URIs read the same way: local files, ``file://``, ``s3://``, ``gs://`` and ``https://``.

``uri.py`` says what a string names and joins paths; ``fs.py`` reads, lists and writes through
pyarrow.fs (docs/cluster_data.md: why); ``errors.py`` turns every failure into one line naming the URI.
No Ray or MLflow here: decoders, manifests and weights readers use it on any process.
"""

from components.io.errors import StorageError
from components.io.fs import delete, exists, filesystem, is_dir, list_files, open_input, read_bytes, size, write_bytes
from components.io.uri import absolute, basename, dirname, is_remote, is_uri, join, local_path, scheme

__all__ = ["StorageError", "absolute", "basename", "delete", "dirname", "exists", "filesystem", "is_dir",
           "is_remote", "is_uri", "join", "list_files", "local_path", "open_input", "read_bytes", "scheme",
           "size", "write_bytes"]
