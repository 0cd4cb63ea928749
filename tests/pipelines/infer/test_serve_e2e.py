"""`vidpeft serve` end to end on Ray Serve (tiny models): real mp4 files posted with a real HTTP client to a
service on 127.0.0.1; answers equal `predict`'s (pipelines/infer/predict_core.py) for an upload, a URI, windows
of a long video and an M2-CLIP request with its own class names; a corrupt file is a 4xx with one line and
the service still answers after it; then it is stopped."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from benchmarks.tiny_runs import LORA, TINY_CLIP, TINY_VIT, m2clip_overrides, write_run
from pipelines.runtime.ray_env import free_loopback_port as free_port

pytestmark = pytest.mark.e2e


def write_videos(root):
    from components.data.synth import write_mp4

    g = np.random.default_rng(0)
    short, long_ = root / "short.mp4", root / "long.mp4"
    write_mp4(short, g.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), fps=8)  # 2 s
    write_mp4(long_, g.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), fps=8)  # 5 s
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(short.read_bytes()[:300])  # a truncated upload
    return short, long_, corrupt


def expected(source, paths, window=0.0, classes=None, top_k=3):
    from pipelines.infer.predict_core import Scorer, predict_local
    from pipelines.infer.trained import load_trained

    table = predict_local(Scorer(load_trained(source), classes=classes, top_k=top_k), [str(p) for p in paths],
                          window_sec=window, stride_sec=window)
    return table.to_pylist()


def same(answer: dict, rows: list[dict]) -> None:
    assert len(answer["predictions"]) == len(rows)
    for got, want in zip(answer["predictions"], rows):
        assert got["top_k_labels"] == want["top_k_labels"]
        np.testing.assert_allclose(got["top_k_scores"], want["top_k_scores"], rtol=0, atol=1e-5)
        assert got["start_sec"] == want["start_sec"] and got["end_sec"] == want["end_sec"]


def test_serve_answers_like_predict_and_survives_a_corrupt_file(tmp_path, ray_session):
    import requests

    from pipelines.infer.serve import start_serving, stop_serving

    short, long_, corrupt = write_videos(tmp_path)
    run = write_run(tmp_path / "vit", TINY_VIT, [LORA])
    clip_run = write_run(tmp_path / "clip", TINY_CLIP, [LORA], overrides=m2clip_overrides([{**LORA, "layers": [-1]}]))
    port = free_port()
    url = start_serving(str(run), port=port, cpus=0.5, max_batch=4, batch_wait_s=0.05, top_k=3)
    assert url == f"http://127.0.0.1:{port}"
    try:
        health = requests.get(f"{url}/health", timeout=60).json()
        assert health["classes"] == ["running", "jumping", "swimming"]

        # an upload and a URI, concurrently (one batch), each equal to predict's row
        with ThreadPoolExecutor(4) as pool:
            up = pool.submit(requests.post, f"{url}/predict?top_k=3", data=short.read_bytes(), timeout=120)
            uri = pool.submit(requests.post, f"{url}/predict", json={"uri": f"file://{long_}", "top_k": 3},
                              timeout=120)
            up, uri = up.result(), uri.result()
        assert up.status_code == 200 and uri.status_code == 200, (up.text, uri.text)
        same(up.json(), expected(run, [short]))
        same(uri.json(), expected(run, [long_]))

        # windows of a long video, as predict --window-sec
        windows = requests.post(f"{url}/predict?window_sec=2&top_k=3", data=long_.read_bytes(), timeout=120).json()
        assert len(windows["predictions"]) == 3  # 0-2, 2-4, 3-5 s
        same(windows, expected(run, [long_], window=2.0))

        # a corrupt file: a clear 4xx, one line; the service still answers
        bad = requests.post(f"{url}/predict", data=corrupt.read_bytes(), timeout=120)
        assert bad.status_code == 422 and "cannot decode" in bad.json()["error"] and "\n" not in bad.json()["error"]
        bad = requests.post(f"{url}/predict?classes=a,b", data=short.read_bytes(), timeout=120)
        assert bad.status_code == 400 and "text tower" in bad.json()["error"]
        assert requests.post(f"{url}/predict?top_k=x", data=b"x", timeout=60).status_code == 400
        same(requests.post(f"{url}/predict?top_k=3", data=short.read_bytes(), timeout=120).json(),
             expected(run, [short]))

        # an M2-CLIP run: class names in the request (open vocabulary)
        stop_serving()
        url = start_serving(str(clip_run), port=free_port(), cpus=0.5, top_k=3)
        names = ["diving", "running", "cooking", "juggling"]
        answer = requests.post(f"{url}/predict", json={"uri": str(short), "classes": names, "top_k": 4},
                               timeout=120)
        assert answer.status_code == 200, answer.text
        assert sorted(answer.json()["predictions"][0]["top_k_labels"]) == sorted(names)
        same(answer.json(), expected(clip_run, [short], classes=names, top_k=4))
    finally:
        stop_serving()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=5)
