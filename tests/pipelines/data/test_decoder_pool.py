"""data.decode_actors auto: the sizing rule, the decode-cost probe and a tiny training run that uses it."""

from __future__ import annotations

import json

import pytest

from components.config import ConfigError
from pipelines.data.decoder_pool import decoders_needed, measure_decode_cost


@pytest.mark.parametrize("per_clip, clips, step, free, cpus, expected", [
    (0.2, 8, 0.4, 8, 1.0, 4),     # 1.6 CPU-s of decoding per 0.4 s step: 4 decoder CPUs
    (0.2, 8, 0.4, 8, 0.5, 8),     # half a CPU each: twice the actors
    (0.2, 8, 0.4, 2, 1.0, 2),     # more than the free CPUs: capped there
    (0.01, 8, 1.0, 8, 1.0, 1),    # a fast decode: one actor, never none
    (0.2, 8, 0.0, 6, 1.0, 6),     # step time unknown: every free CPU
    (0.2, 8, 0.4, 0, 1.0, 1),     # no free CPU: still one
    (0.1, 10, 1.0, 8, 1.0, 1),    # exactly one CPU's worth: one, not two (rounding)
])
def test_sizing_rule(per_clip, clips, step, free, cpus, expected):
    assert decoders_needed(per_clip, clips, step, free, cpus) == expected


def test_auto_is_the_only_word_decode_actors_takes(tmp_path):
    from pipelines.config import DataConfig
    from components.config import from_dict

    assert from_dict(DataConfig, {"decode_actors": "auto"}).decode_actors == "auto"
    with pytest.raises((ConfigError, ValueError)):
        from_dict(DataConfig, {"decode_actors": "many"})
    with pytest.raises((ConfigError, ValueError)):
        from_dict(DataConfig, {"auto_step_seconds": -1})


def test_decode_cost_is_measured_on_real_clips(synth_data):
    from components.data.manifest import read_manifest
    from pipelines.data.ingest import DecodeSettings

    table = read_manifest(synth_data, check_files=False).split("val")
    settings = DecodeSettings(num_frames=8, size=32, sampling="segment", stride=2, training=True, seed=0,
                              task="single_label", num_outputs=4)
    assert measure_decode_cost(table, settings) > 0
    assert measure_decode_cost(table.slice(0, 0), settings) == 0.0


@pytest.mark.e2e
def test_a_run_with_auto_sizes_its_pool_and_trains(ray_session, synth_data, tmp_path, capsys):
    from pipelines.cli import main
    from tests.conftest import DEMO_CONFIG

    out = tmp_path / "run"
    args = ["train", "--config", str(DEMO_CONFIG), "--set", f"data.manifest={synth_data}",
            "--set", f"output_dir={out}", "--set", "tracking.enabled=false", "--set", "optim.epochs=1",
            "--set", "data.decode_actors=auto", "--set", "data.auto_step_seconds=0.5"]
    assert main(args) == 0
    said = capsys.readouterr().out
    line = next(x for x in said.splitlines() if "data.decode_actors auto" in x)
    assert "s/clip" in line, line  # sized from a measured decode cost, not the free-CPU fallback
    assert json.loads((out / "metrics.json").read_text())["epoch"] == 0
