"""Manifests, videos, side features and weights read from a real S3-compatible server (moto, 127.0.0.1):
each gives what the same local file gives, and a missing or truncated object is one line naming it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.data.manifest import ManifestError, read_manifest, write_manifest
from components.io import read_bytes, write_bytes
from components.video.decode import ClipSpec, VideoDecodeError, decode_clip, probe_video
from tests.s3_server import moto_s3


@pytest.fixture(scope="module")
def bucket(synth_data):
    with moto_s3() as s3:
        s3.upload_tree(synth_data.parent, "synth")
        yield s3


def test_manifest_from_the_bucket_resolves_videos_there(bucket, synth_data):
    local = read_manifest(synth_data, check_files=False)
    remote = read_manifest(bucket.uri("synth/manifest.parquet"))  # check_files: one LIST, all present
    assert remote.path == bucket.uri("synth/manifest.parquet")
    assert remote.table["clip_id"].to_pylist() == local.table["clip_id"].to_pylist()
    assert remote.table["video_path"][0].as_py() == bucket.uri("synth/videos/synth_00000.mp4")


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_a_video_decodes_from_memory_like_the_file(bucket, synth_data, decoder):
    spec = ClipSpec(num_frames=4, size=32)
    local = decode_clip(synth_data.parent / "videos/synth_00003.mp4", spec, decoder=decoder)
    remote = decode_clip(bucket.uri("synth/videos/synth_00003.mp4"), spec, decoder=decoder)
    assert np.array_equal(local, remote)
    assert probe_video(bucket.uri("synth/videos/synth_00003.mp4"), decoder) == probe_video(
        synth_data.parent / "videos/synth_00003.mp4", decoder)


def test_missing_and_truncated_videos_are_decode_errors(bucket, synth_data):
    spec = ClipSpec(num_frames=4, size=32)
    with pytest.raises(VideoDecodeError) as e:
        decode_clip(bucket.uri("synth/videos/gone.mp4"), spec)
    assert str(e.value).startswith(bucket.uri("synth/videos/gone.mp4") + ": not found")
    whole = (synth_data.parent / "videos/synth_00001.mp4").read_bytes()
    write_bytes(bucket.uri("cut/synth_00001.mp4"), whole[: len(whole) // 3])
    with pytest.raises(VideoDecodeError, match="cut/synth_00001.mp4"):
        decode_clip(bucket.uri("cut/synth_00001.mp4"), spec, fallback="pyav")


def test_missing_videos_and_manifests_name_row_and_uri(bucket, synth_data, tmp_path):
    rows = read_manifest(synth_data, check_files=False).table.slice(0, 3).to_pylist()
    rows[1]["video_path"] = "videos/not_there.mp4"
    for r in rows[:1] + rows[2:]:
        r["video_path"] = r["video_path"].rsplit("/", 2)[-2] + "/" + r["video_path"].rsplit("/", 1)[-1]
    local = tmp_path / "m.parquet"
    write_manifest(local, rows, ["a", "b", "c", "d"])
    write_bytes(bucket.uri("synth/bad.parquet"), local.read_bytes())
    with pytest.raises(ManifestError, match=r"bad.parquet, row 1 .*video file not found"):
        read_manifest(bucket.uri("synth/bad.parquet"))
    with pytest.raises(ManifestError, match=r"s3://vidpeft/synth/none.parquet: manifest file not found"):
        read_manifest(bucket.uri("synth/none.parquet"))
    whole = read_bytes(bucket.uri("synth/manifest.parquet"))
    write_bytes(bucket.uri("synth/cut.parquet"), whole[:100])
    with pytest.raises(ManifestError, match="cut.parquet: not a readable Parquet file"):
        read_manifest(bucket.uri("synth/cut.parquet"))


def test_written_manifest_in_the_bucket_reads_back(bucket, synth_data):
    m = read_manifest(synth_data, check_files=False)
    target = bucket.uri("copy/manifest.parquet")
    write_manifest(target, m.table, m.class_names, feature_dims=m.feature_dims, regression_names=m.regression_names)
    assert read_manifest(target, check_files=False).table.num_rows == m.table.num_rows


def test_side_features_from_a_bucket_folder(bucket, synth_data, tmp_path):
    import io

    from components.data.features import FeatureSource, add_features

    m = read_manifest(synth_data, check_files=False)
    ids = m.table["clip_id"].to_pylist()[:5]
    for k, cid in enumerate(ids):
        buf = io.BytesIO()
        np.save(buf, np.full(3, k, np.float32))
        write_bytes(bucket.uri(f"feats/{cid}.npy"), buf.getvalue())
    out = tmp_path / "with_feats.parquet"
    stats = add_features(bucket.uri("synth/manifest.parquet"), [FeatureSource("aud", bucket.uri("feats"))], out=out)
    assert stats[0].present == 5 and stats[0].dim == 3
    got = read_manifest(out, check_files=False)
    assert got.table["feat_aud"][2].as_py() == [2.0, 2.0, 2.0]
    # relative video paths became absolute URIs: the new manifest lives elsewhere
    assert got.table["video_path"][0].as_py() == bucket.uri("synth/videos/synth_00000.mp4")


def test_weights_and_init_from_out_of_the_bucket(bucket, tmp_path):
    from safetensors.torch import save_file

    from components.checkpoint import init_adapter_from, save_weights, trainable_state_dict
    from components.config import to_dict
    from components.weights import WeightsError, read_weights
    from tests.components.weights.test_checkpoint_mismatch import MHVA, make

    tensors = {"blocks.0.w": torch.arange(6.0).reshape(2, 3)}
    save_file(tensors, str(tmp_path / "bb.safetensors"))
    torch.save({"state_dict": tensors}, tmp_path / "bb.pth")
    for name in ("bb.safetensors", "bb.pth"):
        write_bytes(bucket.uri(f"weights/{name}"), (tmp_path / name).read_bytes())
        assert torch.equal(read_weights(bucket.uri(f"weights/{name}"))["blocks.0.w"], tensors["blocks.0.w"])
    with pytest.raises(WeightsError, match=r"model.backbone.checkpoint: s3://vidpeft/weights/none.pth: not found"):
        read_weights(bucket.uri("weights/none.pth"))

    cfg, model = make([MHVA], seed=3)
    save_weights(tmp_path / "weights.safetensors", trainable_state_dict(model), to_dict(cfg))
    write_bytes(bucket.uri("runs/r1/weights.safetensors"), (tmp_path / "weights.safetensors").read_bytes())
    _, other = make([MHVA], seed=4)
    loaded = init_adapter_from(other, "mhva", bucket.uri("runs/r1"))  # a run "folder" in the bucket
    assert loaded and all(torch.equal(other.state_dict()[k], model.state_dict()[k]) for k in loaded)
