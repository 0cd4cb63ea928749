"""Missing or refused credentials for an s3:// manifest: `vidpeft train` says so in one line naming the URI and
what to do, before it contacts Ray. The store is moto's S3 server on 127.0.0.1 with credential checks on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.io import StorageError, read_bytes
from components.io.errors import NO_AWS_CREDENTIALS, NO_AWS_CREDENTIALS_HINT
from tests.conftest import DEMO_CONFIG
from tests.s3_server import moto_s3

ROOT = Path(__file__).resolve().parents[3]
NO_KEYS = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials", "AWS_CONFIG_FILE": "/nonexistent/config"}


@pytest.fixture(scope="module")
def s3_auth():
    with moto_s3(auth=True) as server:
        yield server


def _env(server, keys: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({k: v for k, v in server.env.items() if keys or k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    return {**env, **NO_KEYS, "PYTHONPATH": str(ROOT)}


def test_no_credentials_is_named_as_such(s3_auth, monkeypatch):
    for k, v in _env(s3_auth, keys=False).items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(StorageError) as e:
        read_bytes(s3_auth.uri("k400/manifest.parquet"))
    assert e.value.reason == NO_AWS_CREDENTIALS and e.value.uri == s3_auth.uri("k400/manifest.parquet")


@pytest.mark.parametrize("keys, says", [(False, f"{NO_AWS_CREDENTIALS} ({NO_AWS_CREDENTIALS_HINT})"),
                                        (True, "access denied (403) (check the credentials")])
def test_train_stops_before_ray_on_refused_credentials(s3_auth, tmp_path, keys, says):
    manifest = s3_auth.uri("k400/manifest.parquet")
    # an address where no Ray listens: had the driver contacted Ray first, the error would be about Ray
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "train", "--config", str(DEMO_CONFIG),
                           "--set", f"data.manifest={manifest}", "--set", f"output_dir={tmp_path / 'run'}",
                           "--set", "scaling.ray_address=127.0.0.1:1"],
                          cwd=ROOT, env=_env(s3_auth, keys), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vidpeft: error: {manifest}: {says}"), proc.stderr
    assert "Ray" not in proc.stdout + proc.stderr
