"""Every value a shipped preset sets (with the recipe it extends) says where it comes from, and
`vidpeft explain --preset` prints them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from components.config import ConfigError, resolve
from pipelines.cli import explain
from pipelines.config import ExperimentConfig
from pipelines.presets import PRESETS, find_preset, recipe_rows, unsourced

ALL = sorted(PRESETS.rglob("*.yaml"))


@pytest.mark.parametrize("path", ALL, ids=[str(p.relative_to(PRESETS)) for p in ALL])
def test_every_recipe_key_of_every_preset_has_a_source(path):
    assert unsourced(path) == []
    keys = {k for k, _, _ in recipe_rows(path)}
    assert {"optim.lr", "optim.lr_base_batch", "optim.weight_decay", "optim.no_decay", "optim.warmup_epochs",
            "optim.epochs", "data.train_sampling", "data.augment", "data.eval_clips", "data.eval_crops"} <= keys
    for _, _, source in recipe_rows(path):
        assert source.startswith(("paper", "official code", "vidpeft choice")), source
    resolve(ExperimentConfig, [path], ["data.manifest=/x/m.parquet"])  # and the preset is a valid config


def test_a_value_without_a_source_and_a_source_without_a_value_are_reported(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("optim: {lr: 0.1, epochs: 3}\nsources:\n  optim.lr: 'paper Sec. 1'\n  data.flip: 'paper Sec. 2'\n")
    assert unsourced(preset) == ["optim.epochs", "data.flip"]


def test_explain_preset_prints_each_value_and_its_source(capsys):
    assert explain.run(argparse.Namespace(preset="cm3t/mhva_pt")) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("optim.epochs"))
    assert "14" in line and "paper Tables 1/4" in line
    line = next(x for x in out.splitlines() if x.startswith("model.adapters.0.bottleneck"))
    assert "0.125x" in line and "12.84%" in line
    assert explain.run(argparse.Namespace(preset=str(PRESETS / "m2clip" / "m2clip_full.yaml"))) == 0
    assert "official code main.py: --blr 1e-3 per 256 samples" in capsys.readouterr().out


def test_an_unknown_preset_is_one_line_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"--preset cm3t/nope: no such preset file \(presets: .*cm3t/mhva_pt"):
        find_preset("cm3t/nope")
    # a name `vidpeft list configs` prints that is no preset: said as such, not "no such file"
    with pytest.raises(ConfigError, match=r"--preset demo/target: is a shipped config, not a preset"):
        find_preset("demo/target")


def test_the_m2clip_recipe_is_the_official_codes():
    cfg = resolve(ExperimentConfig, [PRESETS / "m2clip" / "m2clip_full.yaml"], ["data.manifest=/x/m.parquet"])
    o, d = cfg.optim, cfg.data
    assert (o.lr, o.lr_base_batch, o.weight_decay, o.no_decay, o.warmup_epochs, o.epochs) == (1e-3, 256, 0.01, True, 2, 12)
    assert (d.train_sampling, d.frame_stride, d.augment, d.flip, d.color_jitter) == ("strided", 16, True, True, 0.0)
    assert (d.eval_clips, d.eval_crops, cfg.model.backbone.num_frames) == (3, 4, 8)  # 8 x 4 x 3


def test_presets_are_plain_configs_of_files_they_extend(tmp_path):
    """extends: paths relative to the file, read first; the file's own values win; a cycle is one line."""
    (tmp_path / "base.yaml").write_text("optim: {lr: 0.5, epochs: 3}\nsources: {optim.lr: 'paper'}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "p.yaml").write_text("extends: ../base.yaml\noptim: {epochs: 7}\n")
    cfg = resolve(ExperimentConfig, [tmp_path / "sub" / "p.yaml"], ["optim.warmup_epochs=1"])
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.optim.warmup_epochs) == (0.5, 7, 1)
    (tmp_path / "base.yaml").write_text("extends: sub/p.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        resolve(ExperimentConfig, [tmp_path / "sub" / "p.yaml"])
    (tmp_path / "bad.yaml").write_text("extends: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: extends must be a path"):
        resolve(ExperimentConfig, [Path(tmp_path / "bad.yaml")])
