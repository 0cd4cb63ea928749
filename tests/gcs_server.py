"""A real GCS emulator for tests: gcp-storage-emulator's server on 127.0.0.1 (a pip package, pure Python).

``gcs_emulator()`` starts it in a process of its own on a free port with one bucket, and points this
process at it through ``STORAGE_EMULATOR_HOST`` (the variable Google's clients read, as a user would for
fake-gcs-server); the environment is restored afterwards.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.s3_server import free_port, server_process


@contextmanager
def gcs_emulator(bucket: str = "vidpeft") -> Iterator[str]:
    """Yields ``gs://bucket``."""
    port = free_port()
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    cmd = [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", f"--default-bucket={bucket}"]
    with server_process(cmd, f"http://127.0.0.1:{port}/storage/v1/b/{bucket}", "gcp-storage-emulator"):
        saved = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
        try:
            yield f"gs://{bucket}"
        finally:
            if saved is None:
                os.environ.pop("STORAGE_EMULATOR_HOST", None)
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = saved
