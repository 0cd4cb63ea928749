"""Decoder backends (data.decoder: decord | pyav) and the fallback decoder (data.decoder_fallback)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.compute as pc
import pytest

from components.config import ConfigError, resolve
from components.data.manifest import read_manifest
from components.data.synth import write_mp4
from components.video.decode import ClipSpec, VideoDecodeError, decode_clip, probe_video
from components.video.decoders import decoder_names, pyav_backend
from components.video.sampling import multiview_indices

AV1 = next((c for c in ("libsvtav1", "libaom-av1", "librav1e") if c in av.codecs_available), None)


def _texture(frames: int = 40, h: int = 48, w: int = 64) -> np.ndarray:
    """uint8 (T, H, W, 3): moving sinusoids (detail a resize can get slightly different)."""
    y, x = np.mgrid[:h, :w]
    return np.stack([np.stack([128 + 100 * np.sin((x + 3 * t) / 6), 128 + 100 * np.cos((y + 2 * t) / 5),
                               np.full((h, w), (5 * t) % 250)], -1).astype(np.uint8) for t in range(frames)])


def _coded(i: int) -> np.ndarray:
    """A flat 32x32 frame whose colour encodes i < 256 (R = 16 * (i // 16), G = 16 * (i % 16))."""
    return np.broadcast_to(np.array([16 * (i // 16) + 8, 16 * (i % 16) + 8, 128], np.uint8), (32, 32, 3))


def _ids(clip: np.ndarray) -> list[int]:
    rgb = clip.reshape(len(clip), -1, 3).mean(1)  # (T, 3)
    return [int(r // 16) * 16 + int(g // 16) for r, g, _ in rgb]


def _write(path: Path, frames: np.ndarray, codec: str, gop: int = 0, fps: int = 8) -> Path:
    """Encode with any PyAV codec (write_mp4 is libx264 with one keyframe per 250 frames)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1
        if gop:
            stream.codec_context.gop_size = gop
        if codec == "libsvtav1":
            stream.options = {"preset": "12"}
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_registry_names():
    assert {"decord", "pyav"} <= set(decoder_names())


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_decoders_agree_on_indices_and_frames(tmp_path, container):
    """Same probe, same frame indices, same shape; pixels equal at native size. Resized frames differ a
    little: decord scales in its bundled FFmpeg 4 filter graph, PyAV with FFmpeg 7's swscale (bilinear
    both, different rounding/taps), measured mean |diff| ~2.2 and max 7 of 255 on this texture; the
    bounds (mean < 4, max < 16) leave room for that and fail on a wrong frame or a wrong colour matrix
    (a frame one index off differs by ~30 on average here)."""
    path = tmp_path / f"texture.{container}"
    write_mp4(path, _texture(), 8) if container == "mp4" else _write(path, _texture(), "libx264")
    assert probe_video(path, "decord") == probe_video(path, "pyav") == (40, 8.0, 48, 64)
    for size in (None, 32, 112):
        spec = ClipSpec(num_frames=8, size=size, sampling="segment")
        a = decode_clip(path, spec, rng=np.random.default_rng(1), decoder="decord")
        b = decode_clip(path, spec, rng=np.random.default_rng(1), decoder="pyav")
        assert a.shape == b.shape == (8, *((48, 64) if size is None else (size, size)), 3) and b.dtype == np.uint8
        diff = np.abs(a.astype(int) - b.astype(int))
        if size is None:
            assert diff.max() == 0
        else:
            assert diff.mean() < 4 and diff.max() < 16, (size, diff.mean(), diff.max())
    views = decode_clip(path, ClipSpec(num_frames=4, size=None), decoder="pyav",
                        indices_fn=lambda s, e: multiview_indices(s, e, 4, 3))
    assert views.shape == (3, 4, 48, 64, 3)


def test_pyav_frame_indices_ranges_and_seeking(tmp_path, monkeypatch):
    """Frames far into a video are reached by seeking to the keyframe before them (GOP 16 here) and
    are the same frames decord returns, as is a plain decode from frame 0."""
    path = _write(tmp_path / "coded.mp4", np.stack([_coded(i) for i in range(200)]), "libx264", gop=16)
    spec = ClipSpec(num_frames=4, size=None, sampling="uniform")
    cases = [{}, {"start_frame": 150, "end_frame": 190}, {"start_sec": 20.0, "end_sec": 22.0},
             {"start_frame": 195, "end_frame": 400}, {"start_frame": 3, "end_frame": 7}]
    for ranges in cases:
        want = _ids(decode_clip(path, spec, decoder="decord", **ranges))
        assert _ids(decode_clip(path, spec, decoder="pyav", **ranges)) == want, ranges
    assert _ids(decode_clip(path, spec, decoder="pyav", start_frame=150, end_frame=190)) == [155, 165, 175, 185]
    monkeypatch.setattr(pyav_backend, "SEEK_MIN_FRAMES", 10 ** 9)  # never seek: decode from frame 0
    assert _ids(decode_clip(path, spec, decoder="pyav", start_sec=20.0, end_sec=22.0)) == [162, 166, 170, 174]


@pytest.mark.skipif(AV1 is None, reason="this PyAV build has no AV1 encoder to write the test file")
def test_fallback_reads_what_decord_cannot(tmp_path):
    """decord 0.6's bundled FFmpeg has no AV1 decoder; PyAV's has (dav1d)."""
    path = _write(tmp_path / "av1.mp4", np.stack([_coded(i) for i in range(24)]), AV1)
    spec = ClipSpec(num_frames=4, size=None, sampling="uniform")
    with pytest.raises(VideoDecodeError) as info:
        decode_clip(path, spec, decoder="decord")
    assert info.value.path == str(path)
    used = []
    clip = decode_clip(path, spec, decoder="decord", fallback="pyav", on_fallback=used.append)
    assert _ids(clip) == [3, 9, 15, 21] and len(used) == 1 and used[0].path == str(path)
    assert probe_video(path, fallback="pyav") == (24, 8.0, 32, 32)


def test_neither_decoder_reads_a_corrupt_file(synth_data):
    table = read_manifest(synth_data).table
    bad = table.filter(pc.starts_with(table["clip_id"], "corrupt"))["video_path"].to_pylist()
    for path in bad:
        used = []
        with pytest.raises(VideoDecodeError) as info:
            decode_clip(path, ClipSpec(num_frames=4, size=32), fallback="pyav", on_fallback=used.append)
        assert info.value.path == path and not used
        assert "pyav" in str(info.value) or "empty" in str(info.value)  # empty files fail before any decoder


@pytest.mark.skipif(AV1 is None, reason="this PyAV build has no AV1 encoder to write the test file")
def test_ingest_counts_fallback_and_skipped_clips(synth_data, tmp_path, caplog):
    """The training path: a clip read by the fallback decoder is flagged and counted by the engine, a
    clip neither reads is skipped and counted; the counts do not mix."""
    import torch

    from components.engine.loop import run_pass
    from components.tasks import make_task
    from pipelines.data.ingest import ClipDecoder, DecodeSettings

    table = read_manifest(synth_data).table
    good = table.filter(pc.starts_with(table["clip_id"], "synth")).slice(0, 2).to_pylist()
    bad = table.filter(pc.starts_with(table["clip_id"], "corrupt")).slice(0, 1).to_pylist()
    av1 = {**good[0], "clip_id": "av1_clip", "video_path": str(_write(tmp_path / "a.mp4", _texture(16, 32, 32), AV1))}
    rows = [*good, av1, *bad]
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    base = dict(num_frames=4, size=32, sampling="uniform", stride=2, training=False, seed=0,
                task="single_label", num_outputs=4)
    with caplog.at_level("WARNING", logger="vidpeft.ingest"):
        out = ClipDecoder(DecodeSettings(**base, decoder="decord", decoder_fallback="pyav"))(batch)
    assert out["ok"].tolist() == [True, True, True, False]
    assert out["fallback"].tolist() == [False, False, True, False]
    assert any("av1_clip" in m and "decoded with pyav" in m for m in caplog.messages)
    alone = ClipDecoder(DecodeSettings(**base, decoder="decord"))(batch)
    assert alone["ok"].tolist() == [True, True, False, False] and not alone["fallback"].any()

    class Mean(torch.nn.Module):
        def forward(self, batch):
            return {"logits": batch["video"].float().mean(dim=(1, 2, 3)).repeat(1, 2)[:, :4]}  # (B, 4)

    torch_batch = {k: torch.as_tensor(v) for k, v in out.items()}
    r = run_pass(Mean(), [torch_batch], make_task("single_label", 4))
    assert (r.clips, int(r.skipped.sum()), r.fallback) == (3, 1, 1)


def test_pyav_through_ray_data(ray_session, synth_data):
    """Ray Data's decoder actors get the decoder settings (decoder=pyav, fallback=decord)."""
    from pipelines.data.ingest import DecodeSettings, build_dataset

    table = read_manifest(synth_data).split("train").slice(0, 8)
    settings = DecodeSettings(num_frames=4, size=32, sampling="uniform", stride=2, training=False, seed=0,
                              task="single_label", num_outputs=4, decoder="pyav", decoder_fallback="decord")
    rows = list(build_dataset(table, settings, decode_actors=1, decode_cpus=0.5, decode_batch_size=4)
                .iter_batches(batch_size=8, batch_format="numpy"))
    video = np.concatenate([b["video"] for b in rows])
    ok = np.concatenate([b["ok"] for b in rows])
    assert video.shape == (8, 4, 32, 32, 3) and ok.sum() >= 6  # the two corrupt rows may be among them
    assert video[ok].reshape(int(ok.sum()), -1).std(axis=1).min() > 0  # real frames, not zero fill
    first = str(table["video_path"][0])
    assert np.abs(video[0].astype(int) - decode_clip(first, ClipSpec(num_frames=4, size=32), decoder="pyav")).max() == 0


@pytest.mark.parametrize("override, key", [("data.decoder=ffmpeg", "decoder"),
                                           ("data.decoder_fallback=opencv", "decoder_fallback")])
def test_unknown_decoder_is_a_one_line_config_error(override, key):
    from pipelines.config import ExperimentConfig

    with pytest.raises(ConfigError) as e:
        resolve(ExperimentConfig, [], [override])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("data") and key in msg and "decord, pyav" in msg
    assert resolve(ExperimentConfig, [], ["data.decoder=pyav", "data.decoder_fallback="]).data.decoder == "pyav"
