"""A real S3-compatible server for tests: moto's server mode (``moto_server``) on 127.0.0.1.

``moto_s3()`` starts it on a free port, creates a bucket, points this process's environment at it
(``AWS_ENDPOINT_URL`` and dummy credentials, as a user would for MinIO) and gives the same variables as
``env`` for subprocesses (a ``vidpeft`` CLI run, ``ray start``); the environment is restored afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipelines.runtime.ray_env import free_loopback_port as free_port  # noqa: F401  (tests import it from here)
from pipelines.runtime.ray_env import scoped_environ


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    env: dict[str, str]

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def upload_tree(self, local: str | Path, prefix: str) -> str:
        """Every file below ``local`` to ``s3://bucket/prefix/`` (same relative paths); the prefix URI."""
        from components.io import write_bytes

        local = Path(local)
        for f in sorted(local.rglob("*")):
            if f.is_file():
                write_bytes(self.uri(f"{prefix}/{f.relative_to(local).as_posix()}"), f.read_bytes())
        return self.uri(prefix)


@contextmanager
def server_process(cmd: list[str], ready_url: str, name: str, env: dict | None = None) -> Iterator[None]:
    """``cmd`` in a process of its own until ``ready_url`` answers (60 s at most), stopped afterwards."""
    import subprocess
    import time
    import urllib.request

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(ready_url, timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{name} did not start ({ready_url})") from None
            time.sleep(0.2)
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def moto_s3(bucket: str = "vidpeft", auth: bool = False) -> Iterator[S3Server]:
    """moto's server in a process of its own (a server thread inside the test process would share its
    GIL with pyarrow calls that block while holding it, e.g. an output stream closed by the collector).
    ``auth``: the server checks credentials after creating the bucket (moto's IAM: only keys it issued
    pass; the dummy ones in ``env`` are refused, as a missing key is)."""
    import sys

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server_env = {**os.environ, **({"INITIAL_NO_AUTH_ACTION_COUNT": "1"} if auth else {})}  # 1: the bucket's creation
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    with server_process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                        f"{endpoint}/moto-api/", "moto_server", server_env):
        with scoped_environ(env):
            import boto3

            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
            yield S3Server(endpoint, bucket, env)
