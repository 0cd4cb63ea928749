"""`vidpeft demo --recipe m2clip` at a smaller size: a tiny CLIP pretrained contrastively on captioned
clips, exported as an open_clip checkpoint, adapted frozen with TED + text adapters, then recognising
compositions of colour, shape and direction that no stage trained on (zero-shot above chance)."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from components.data.manifest import read_manifest
from pipelines.demo.m2clip import M2ClipDemoSize, run_m2clip_demo

pytestmark = pytest.mark.e2e

SMALL = M2ClipDemoSize(clips_per_class=16)
EPOCHS = ["optim.epochs=2"]  # both stages


def test_m2clip_demo_recognises_held_out_compositions(ray_session, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_m2clip_demo(str(tmp_path), EPOCHS, size=SMALL)
    captured = capsys.readouterr()
    out = captured.out
    runs_dir = tmp_path / "runs" / "demo_m2clip"

    summary = json.loads((runs_dir / "demo_summary.json").read_text())
    assert {"chance", "zeroshot_chance", "runs", "seconds"} <= summary.keys()
    assert summary["runs"].keys() == {"pretrain", "adapters"}
    assert summary["zeroshot_chance"] == pytest.approx(1 / 8) and summary["chance"] == pytest.approx(1 / 24)
    adapted = summary["runs"]["adapters"]
    # held-out compositions: every word pair was seen in training, the triple never was
    assert adapted["zeroshot_top1"] >= 2 * summary["zeroshot_chance"], summary["runs"]
    assert summary["runs"]["pretrain"]["zeroshot_top1"] is not None

    seen = read_manifest(tmp_path / "demo_data" / "compositions" / "seen.parquet", check_files=False)
    held = read_manifest(tmp_path / "demo_data" / "compositions" / "heldout.parquet", check_files=False)
    assert len(seen.class_names) == 24 and len(held.class_names) == 8
    assert not set(seen.class_names) & set(held.class_names)

    # the pretrained CLIP is an open_clip checkpoint of both towers, loaded by the adapters' run
    clip = runs_dir / "clip.safetensors"
    with safe_open(str(clip), framework="pt") as f:
        keys = set(f.keys())
    assert {"visual.proj", "token_embedding.weight", "text_projection", "logit_scale"} <= keys
    assert not any("adapters" in k or "base_layer" in k for k in keys)
    assert f"checkpoint: {clip}" in (runs_dir / "adapters" / "config.yaml").read_text()
    assert (runs_dir / "demo_curves.png").stat().st_size > 0
    assert "vidpeft zeroshot --checkpoint" in out and "zero-shot top-1" in out
    assert "Reporting training result" not in out + captured.err  # Ray Train's own lines show only with --verbose

    # a rerun skips every finished stage
    again = run_m2clip_demo(str(tmp_path), EPOCHS, size=SMALL)
    assert {k: v["run_id"] for k, v in again["runs"].items()} == {k: v["run_id"] for k, v in summary["runs"].items()}
    assert "finished earlier" in capsys.readouterr().out
