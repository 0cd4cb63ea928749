"""Campaign cell keys: what makes a finished cell count as finished."""

from __future__ import annotations

import json

from components.config import to_dict
from pipelines.search.campaign import cell_key
from pipelines.config import ExperimentConfig


def test_cell_key_ignores_fields_at_their_default():
    """A config field added later (present at its default) must not change finished cells' keys."""
    base = to_dict(ExperimentConfig())
    base["data"]["manifest"] = "a.parquet"
    older = json.loads(json.dumps(base))
    del older["data"]["eval_clips"]  # as written by a version without the field
    assert cell_key(base) == cell_key(older)
    changed = json.loads(json.dumps(base))
    changed["data"]["eval_clips"] = 2
    assert cell_key(changed) != cell_key(base)


def test_cell_keys_are_those_of_campaigns_run_before_configs_were_per_model_kind():
    """Finished cells are found by key: one-ModelConfig-for-all-kinds keys (literal values, computed by
    that version) must not change, or an upgraded `vidpeft campaign` would rerun every finished M2-CLIP cell."""
    from pathlib import Path

    from components.config import load_yaml, resolve

    presets = Path(__file__).resolve().parents[3] / "pipelines" / "configs" / "presets"
    # the presets as they were then: their model section alone (no recipe yet), widths in channels
    then = {"m2clip/ted_text.yaml": ["model.adapters.0.bottleneck=384", "model.m2clip.text_adapters.0.bottleneck=384"],
            "m2clip/m2clip_full.yaml": ["model.adapters.0.bottleneck=384", "model.m2clip.text_adapters.0.bottleneck=384"],
            "cm3t/mhva_pt.yaml": ["model.adapters.0.bottleneck=64", "model.adapters.1.hidden=232"]}
    for preset, key in [("m2clip/ted_text.yaml", "c72bf210e67449a1"), ("m2clip/m2clip_full.yaml", "2c0013b313f5023f"),
                        ("cm3t/mhva_pt.yaml", "d07861d54db355a2")]:
        model = {"model": load_yaml(presets / preset)["model"]}
        cfg = resolve(ExperimentConfig, [], ["data.manifest=/x/m.parquet", "seed=1", *then[preset]], base=model)
        assert cell_key(to_dict(cfg)) == key, preset
