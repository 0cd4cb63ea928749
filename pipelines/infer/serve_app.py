"""The HTTP service of `vidpeft serve`: one Ray Serve deployment, a model per replica, batched scoring.

Endpoints (route prefix "/"):
  POST /predict   the video as the raw request body (``curl --data-binary @clip.mp4``), options in the query
                  string (``?top_k=3&window_sec=2&stride_sec=1&classes=run,jump``); or a JSON body
                  ``{"uri": "/path/or/file:///clip.mp4", "top_k": 3, "window_sec": 2, "classes": [...]}``.
  GET  /health    {"status": "ok", "classes": [...], "task": ...}.
Answer: {"video", "predictions": [{start_sec, end_sec, label, score, top_k_labels, top_k_scores}, ...]}, one
prediction per window (``window_sec``) or one for the whole video, as `vidpeft predict` rows (same decoding,
same scoring: pipelines/infer/predict_core.py). Bad requests are 400, videos that cannot be decoded 422, each
with {"error": one line}; the replica stays up. ``classes`` (open vocabulary) needs an M2-CLIP model.

Decoding runs in a worker thread per request; the model calls of concurrent requests are batched
(``@serve.batch``: up to ``max_batch`` requests, waiting at most ``batch_wait_s``), grouped by class list.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from components.config import ConfigError

MAX_UPLOAD = 512 * 2**20  # bytes


class BadRequest(ValueError):
    """A request the service refuses (HTTP 400), with a one-line reason."""


def make_scorer(source: str, backbone_checkpoint: str | None, top_k: int, device: str, threads: int = 0):
    """A Scorer for a run directory or .safetensors export (torch), or an OnnxScorer for a .onnx file."""
    from pipelines.infer.onnx_scorer import OnnxScorer, is_onnx

    if is_onnx(source):
        return OnnxScorer(source, top_k, threads)
    from pipelines.infer.predict_core import Scorer
    from pipelines.infer.trained import load_trained

    return Scorer(load_trained(source, backbone_checkpoint), device, top_k=top_k)


def _number(value, name: str, kind=float, minimum: float = 0.0):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name}: expected a number, got {value!r}") from None
    if number < minimum:
        raise BadRequest(f"{name}: must be >= {minimum}, got {number}")
    return number


def parse_options(raw: dict) -> dict:
    """top_k, window_sec, stride_sec, classes from query parameters or a JSON body."""
    known = {"uri", "top_k", "window_sec", "stride_sec", "classes"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise BadRequest(f"unknown option(s) {unknown}; known: {sorted(known)}")
    classes = raw.get("classes") or None
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",")]
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes)):
        raise BadRequest("classes: a list of non-empty class names (or one comma-separated string)")
    window = _number(raw.get("window_sec", 0), "window_sec")
    stride = _number(raw.get("stride_sec", 0), "stride_sec")
    if stride and not window:
        raise BadRequest("stride_sec needs window_sec")
    top_k = _number(raw.get("top_k", 0), "top_k", int)
    return {"top_k": top_k or None, "window_sec": window, "stride_sec": stride or window, "classes": classes}


def local_path(uri: str) -> str:
    """A local path from a plain path or a file:// URI (the replica reads it; other schemes are refused)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme else uri
        if not Path(path).is_file():
            raise BadRequest(f"uri {uri!r}: no such file on the serving node")
        return path
    raise BadRequest(f"uri {uri!r}: only local paths and file:// URIs are read (upload the bytes instead)")


class VideoService:
    def __init__(self, source: str, backbone_checkpoint: str | None = None, top_k: int = 5, max_batch: int = 8,
                 batch_wait_s: float = 0.01, threads: int = 0) -> None:
        import torch

        from pipelines.infer.predict_core import ClipReader, eval_settings

        if threads > 0:
            torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.scorer = make_scorer(source, backbone_checkpoint, top_k, device, threads)
        self.reader = ClipReader(eval_settings(self.scorer.trained.cfg))
        self.score.set_max_batch_size(max_batch)
        self.score.set_batch_wait_timeout_s(batch_wait_s)

    def decode(self, path: str, window_sec: float, stride_sec: float) -> tuple[list[tuple], np.ndarray]:
        """Windows [(start, end)] and their clips (n, [V,] T, S, S, 3) uint8, as `predict` decodes them."""
        from pipelines.infer.predict_core import window_ranges

        ranges = (window_ranges(path, window_sec, stride_sec, **self.reader.decoders) if window_sec
                  else [(None, None)])
        clips = [self.reader(path, start_sec=start, end_sec=end) for start, end in ranges]
        return ranges, np.stack(clips)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def score(self, items: list[tuple[np.ndarray, tuple | None]]) -> list[np.ndarray]:
        """Concurrent requests' clips -> their scores: one model call per distinct class list."""
        out: list[np.ndarray | None] = [None] * len(items)
        groups: dict[tuple | None, list[int]] = {}
        for i, (_, classes) in enumerate(items):
            groups.setdefault(classes, []).append(i)
        for classes, members in groups.items():
            scorer = self.scorer.variant(list(classes)) if classes else self.scorer
            clips = np.concatenate([items[i][0] for i in members])
            scores = await asyncio.to_thread(scorer.scores, clips)
            start = 0
            for i in members:
                n = len(items[i][0])
                out[i], start = scores[start : start + n], start + n
        return out

    async def __call__(self, request: Request):
        if request.url.path.rstrip("/") == "/health":
            return JSONResponse({"status": "ok", "classes": self.scorer.names, "task": self.scorer.task})
        if request.url.path.rstrip("/") != "/predict" or request.method != "POST":
            return JSONResponse({"error": "POST /predict (a video body or a JSON {\"uri\": ...}); GET /health"},
                                status_code=404)
        from components.video.decode import VideoDecodeError

        tmp = None
        try:
            body = await request.body()
            if request.headers.get("content-type", "").startswith("application/json"):
                try:
                    raw = json.loads(body or b"{}")
                except ValueError:
                    raise BadRequest("the JSON body does not parse") from None
                if not isinstance(raw, dict) or not raw.get("uri"):
                    raise BadRequest('a JSON body needs "uri" (or send the video itself as the body)')
                options, path, name = parse_options(raw), local_path(str(raw["uri"])), str(raw["uri"])
            else:
                options = parse_options(dict(request.query_params))
                if not body:
                    raise BadRequest("empty body: send the video bytes, or a JSON {\"uri\": ...}")
                if len(body) > MAX_UPLOAD:
                    raise BadRequest(f"upload of {len(body)} bytes is over the {MAX_UPLOAD} byte limit")
                fd, tmp = tempfile.mkstemp(suffix=".mp4", prefix="vidpeft-serve-")
                with os.fdopen(fd, "wb") as f:
                    f.write(body)
                path, name = tmp, request.headers.get("x-filename", "upload")
            scorer = self.scorer.variant(options["classes"], options["top_k"])  # checks open vocabulary
            ranges, clips = await asyncio.to_thread(self.decode, path, options["window_sec"], options["stride_sec"])
        except (BadRequest, ConfigError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        except VideoDecodeError as e:
            said = " ".join(str(e).replace(tmp, name).split()) if tmp else " ".join(str(e).split())
            return JSONResponse({"error": f"cannot decode the video: {said}"}, status_code=422)
        finally:
            if tmp:
                os.unlink(tmp)
        classes = tuple(options["classes"]) if options["classes"] else None
        scores = await self.score((clips, classes))
        meta = [{"start_sec": start, "end_sec": end} for start, end in ranges]
        rows = scorer.rows(meta, scores)
        keep = ("start_sec", "end_sec", "label", "score", "top_k_labels", "top_k_scores")
        return JSONResponse({"video": name, "predictions": [{k: r[k] for k in keep} for r in rows]})
