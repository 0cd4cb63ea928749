"""components/io against real servers on 127.0.0.1: moto's S3 server, and a small HTTP server for the
failures an S3 emulator will not produce on demand (403, a body cut short)."""

from __future__ import annotations

import http.server
import threading

import numpy as np
import pytest

from components.io import StorageError, exists, is_dir, join, list_files, read_bytes, size, write_bytes
from tests.s3_server import free_port, moto_s3


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as server:
        yield server


def test_read_list_and_write_objects(s3, tmp_path):
    write_bytes(s3.uri("a/one.bin"), b"12345")
    write_bytes(s3.uri("a/sub/two.mp4"), b"xy")
    assert read_bytes(s3.uri("a/one.bin")) == b"12345"
    assert size(s3.uri("a/one.bin")) == 5
    assert exists(s3.uri("a/one.bin")) and not exists(s3.uri("a/none.bin"))
    assert list_files(s3.uri("a/")) == [s3.uri("a/one.bin"), s3.uri("a/sub/two.mp4")]
    assert list_files(s3.uri("a"), (".mp4",)) == [s3.uri("a/sub/two.mp4")]
    assert is_dir(s3.uri("a/sub")) and not is_dir(s3.uri("nothing/here"))
    # file:// and plain paths go through the same calls
    local = tmp_path / "x.bin"
    write_bytes(f"file://{local}", b"local")
    assert read_bytes(str(local)) == b"local" and exists(f"file://{local}")


def test_join_resolves_against_a_bucket_prefix():
    assert join("s3://b/data/", "videos/a.mp4") == "s3://b/data/videos/a.mp4"
    assert join("s3://b/data", "../v/a.mp4") == "s3://b/v/a.mp4"
    assert join("s3://b/data", "gs://c/a.mp4") == "gs://c/a.mp4"
    assert join("/data", "v/a.mp4") == "/data/v/a.mp4"


def test_missing_object_and_bucket_name_the_uri(s3):
    with pytest.raises(StorageError) as e:
        read_bytes(s3.uri("gone.mp4"))
    assert str(e.value).startswith(f"{s3.uri('gone.mp4')}: not found") and e.value.missing
    with pytest.raises(StorageError) as e:
        read_bytes("s3://no-such-bucket-here/x.mp4")
    assert "s3://no-such-bucket-here/x.mp4" in str(e.value) and e.value.reason in ("bucket not found", "not found")


def test_unreachable_endpoint_says_what_to_check(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(StorageError) as e:
        exists("s3://bucket/manifest.parquet")
    text = str(e.value)
    assert text.startswith("s3://bucket/manifest.parquet: endpoint unreachable") and "AWS_ENDPOINT_URL" in text
    assert "\n" not in text


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/forbidden":
            self.send_response(403)
            self.end_headers()
        elif self.path == "/cut":  # says 100 bytes, sends 10, closes
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True
        elif self.path == "/ok":
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"abc")
        else:
            self.send_response(404)
            self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def http_base():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_reads_and_failures(http_base):
    assert read_bytes(f"{http_base}/ok") == b"abc" and size(f"{http_base}/ok") == 3
    assert not exists(f"{http_base}/missing")
    with pytest.raises(StorageError) as e:
        read_bytes(f"{http_base}/forbidden")
    assert str(e.value).startswith(f"{http_base}/forbidden: access denied (403)") and "credentials" in str(e.value)
    with pytest.raises(StorageError) as e:
        read_bytes(f"{http_base}/cut")
    assert str(e.value).startswith(f"{http_base}/cut: truncated")
    with pytest.raises(StorageError, match="read-only"):
        write_bytes(f"{http_base}/new", b"x")


def test_numpy_roundtrip_through_bytes(s3):
    import io

    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    buf = io.BytesIO()
    np.save(buf, arr)
    write_bytes(s3.uri("f/x.npy"), buf.getvalue())
    assert np.array_equal(np.load(io.BytesIO(read_bytes(s3.uri("f/x.npy")))), arr)
