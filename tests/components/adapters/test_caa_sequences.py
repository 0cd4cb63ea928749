"""Cross-attention adapters over modality SEQUENCES (M > 1 tokens per clip: audio frames, flow per
time bin, transcript tokens): the manifest declares them (feature_tokens), the ingest hands them over
as (B, M, D), and CAA / MMCA attend over the M tokens, each projected by its own key (and value) row.
Both readings (``values: video`` the paper's literal Q = V, ``values: modality``) are checked
against a hand computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from einops import rearrange

from components.adapters.base import ForwardContext, SiteInfo, TokenLayout
from components.adapters.caa import CAAConfig, CrossAttentionAdapter
from components.config import from_dict
from components.data.manifest import ManifestError, read_manifest, write_manifest
from components.model import ModelConfig, build_model
from tests.conftest import TINY_VIT

M, D, R, DIM = 4, 6, 8, 16


def caa_layer(values: str, tokens: int = M) -> CrossAttentionAdapter:
    context = ForwardContext()
    context.modality_dims = {"audio": D}
    context.modality_tokens = {"audio": tokens}
    site = SiteInfo("blocks.0", "block", 0, DIM, 2, "test", TokenLayout(kind="sequence"), context,
                    base=torch.nn.Identity())
    torch.manual_seed(0)
    layer = CrossAttentionAdapter(CAAConfig(modalities=["audio"], bottleneck=R, values=values, fusion="sum"), site)
    with torch.no_grad():
        layer.up.weight.normal_()  # past the zero init, so the delta shows what reached the tokens
    return layer.eval()


@pytest.mark.parametrize("values", ["video", "modality"])
def test_sequence_modality_equals_hand_computed_cross_attention(values):
    layer = caa_layer(values)
    x = torch.randn(2, 5, DIM)
    seq = torch.randn(2, M, D)
    layer.context.set(num_frames=1, side={"audio": seq})
    with torch.no_grad():
        delta = layer(x, x)
        h = torch.relu(layer.down.own[0](x))  # Q = V = ReLU(x W_down)  (b, l, r)
        k = seq @ layer.keys.proj["audio"].weight.T + layer.keys.proj["audio"].bias  # one key per token (b, m, r)
        scores = torch.einsum("blr,bmr->blm", h, k) / R**0.5
        if values == "modality":
            v = seq @ layer.values.proj["audio"].weight.T + layer.values.proj["audio"].bias
            z = scores.softmax(-1) @ v
        else:  # each modality token pools the video tokens it matches, the tokens read them back
            pooled = torch.einsum("blm,blr->bmr", scores.softmax(1), h)
            z = scores.softmax(-1) @ pooled
        ref = layer.scale * layer.up(z)
    torch.testing.assert_close(delta, ref, atol=1e-5, rtol=1e-5)
    # one projection row set per modality, whatever M: the keys are Linear(D, r) applied per token
    assert layer.keys.proj["audio"].weight.shape == (R, D)


def test_modality_tokens_give_video_tokens_different_summaries_under_the_literal_reading():
    """With one key token every video token receives the same modality-guided summary; with a
    sequence of M tokens the summaries differ per video token."""
    x = torch.randn(1, 5, DIM)
    for tokens, distinct in ((1, False), (M, True)):
        layer = caa_layer("video", tokens)
        feat = torch.randn(1, D) if tokens == 1 else torch.randn(1, M, D)
        h = torch.relu(layer.down.own[0](x))
        with torch.no_grad():
            k = layer.keys("audio", feat)
            z = layer.cross_attend(h, k)
        spread = (z - z.mean(dim=1, keepdim=True)).abs().max()
        assert (spread > 1e-4) == distinct, (tokens, spread)


def test_sequence_modalities_through_a_model_with_caa_and_mmca():
    for adapter in ({"type": "caa", "modalities": ["audio"], "bottleneck": 8},
                    {"type": "mmca", "modalities": ["audio"], "bottleneck": 8, "num_heads": 2}):
        cfg = from_dict(ModelConfig, {"backbone": TINY_VIT, "modalities": [{"name": "audio", "dim": D, "tokens": M}],
                                      "adapters": [adapter]})
        torch.manual_seed(0)
        model = build_model(cfg, 3).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ".adapters." in name:
                    p.normal_(std=0.3)
        v = torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8)
        seq = torch.randn(2, M, D)
        with torch.no_grad():
            out = model({"video": v, "side_audio": seq, "side_audio_mask": torch.tensor([True, True])})["logits"]
            shuffled = model({"video": v, "side_audio": seq.flip(1) * 2})["logits"]
            with pytest.raises(ValueError, match=r"side input 'audio': expected \(2, 4, 6\)"):
                model({"video": v, "side_audio": torch.randn(2, D)})
        assert torch.isfinite(out).all() and not torch.allclose(out, shuffled)


def test_manifest_declares_sequence_features_and_checks_their_length(tmp_path):
    rows = [{"clip_id": f"c{i}", "video_path": f"v{i}.mp4", "split": "train", "dataset": "d", "label": 0,
             "feat_audio": np.arange(M * D, dtype=np.float32).tolist()} for i in range(2)]
    path = write_manifest(tmp_path / "m.parquet", rows, ["a"], feature_dims={"feat_audio": D},
                          feature_tokens={"feat_audio": M})
    m = read_manifest(path, check_files=False)
    assert m.feature_dims == {"feat_audio": D} and m.extra_metadata["feature_tokens"] == {"feat_audio": M}
    rows[1]["feat_audio"] = rows[1]["feat_audio"][:D]  # one token instead of four
    with pytest.raises(ManifestError, match="feat_audio"):
        write_manifest(tmp_path / "bad.parquet", rows, ["a"], feature_dims={"feat_audio": D},
                       feature_tokens={"feat_audio": M})


def test_ingest_hands_sequences_over_as_tokens_by_dim(tmp_path):
    from pipelines.data.ingest import ClipDecoder, DecodeSettings, ModalityColumn

    settings = DecodeSettings(num_frames=2, size=16, sampling="uniform", stride=1, training=False, seed=0,
                              task="single_label", num_outputs=2,
                              modalities=(ModalityColumn("audio", "feat_audio", D, M),))
    flat = np.arange(M * D, dtype=np.float32)
    batch = {"clip_id": np.array(["a", "b"]), "video_path": np.array(["/missing/a.mp4", "/missing/b.mp4"]),
             "label": np.array([0, 1]), "feat_audio": np.array([flat, None], dtype=object)}
    out = ClipDecoder(settings)(batch)
    assert out["side_audio"].shape == (2, M, D)
    np.testing.assert_array_equal(out["side_audio"][0], rearrange(flat, "(m d) -> m d", m=M))
    assert out["side_audio_mask"].tolist() == [True, False]


def test_prepare_config_reads_tokens_from_the_manifest(tmp_path):
    from pipelines.config import ExperimentConfig
    from pipelines.run.inputs import prepare_config
    from components.data.synth import make_synthetic_dataset

    src = read_manifest(make_synthetic_dataset(tmp_path / "s", num_classes=2, clips_per_class=4, frames=4,
                                               size=16, feature_dim=0))
    table = src.table.append_column("feat_audio", pa.array([[0.5] * (M * D)] * src.table.num_rows,
                                                           pa.list_(pa.float32())))
    path = write_manifest(tmp_path / "seq.parquet", table, src.class_names, feature_dims={"feat_audio": D},
                          feature_tokens={"feat_audio": M})
    cfg = from_dict(ExperimentConfig, {"data": {"manifest": str(path)},
                                       "model": {"modalities": [{"name": "audio"}]}})
    prepared, _ = prepare_config(cfg)
    (audio,) = prepared.model.modalities
    assert (audio.dim, audio.tokens) == (D, M)


def test_feature_sources_keep_m_tokens_per_clip(tmp_path):
    from components.data.features import FeatureSource, add_features
    from components.data.synth import make_synthetic_dataset

    path = make_synthetic_dataset(tmp_path / "s", num_classes=2, clips_per_class=4, frames=4, size=16, feature_dim=0)
    stems = [Path(p).stem for p in read_manifest(path).table["video_path"].to_pylist()]
    seq_dir, clip_dir = tmp_path / "seq", tmp_path / "clip"
    seq_dir.mkdir(), clip_dir.mkdir()
    steps = np.arange(8, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # row i = [i, i, i]
    for stem in stems:
        np.save(seq_dir / f"{stem}.npy", steps)  # 8 steps at 1 per second; clips have no time range: all 8
        np.save(clip_dir / f"{stem}.npy", steps)
    add_features(path, [FeatureSource("audio", str(seq_dir), time_aligned=True, rate=1.0, tokens=4),
                        FeatureSource("flow", str(clip_dir), key="video", tokens=2)])
    m = read_manifest(path)
    assert m.feature_dims == {"feat_audio": 3, "feat_flow": 3}
    assert m.extra_metadata["feature_tokens"] == {"feat_audio": 4, "feat_flow": 2}
    audio = np.asarray(m.table["feat_audio"][0].as_py()).reshape(4, 3)
    np.testing.assert_allclose(audio[:, 0], [0.5, 2.5, 4.5, 6.5])  # means of rows (0,1), (2,3), ...
    flow = np.asarray(m.table["feat_flow"][0].as_py()).reshape(2, 3)
    np.testing.assert_allclose(flow[:, 0], [1.5, 5.5])
