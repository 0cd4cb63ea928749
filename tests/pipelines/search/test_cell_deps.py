"""Campaign cells that start from earlier cells ({cell:VARIANT}): the staged CM3T campaign."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.config import ConfigError
from pipelines.search.campaign import expand, load_campaign
from pipelines.search.cell_deps import fill_cells, waves

STAGED = Path(__file__).resolve().parents[3] / "tune_spaces" / "campaigns" / "cm3t_staged.yaml"


def test_the_staged_campaign_loads_each_stage_into_the_next_frozen(tmp_path):
    camp = load_campaign(STAGED)
    cells = expand(camp, STAGED, ["profile=tiny"], tmp_path)
    by = {c.variant: c for c in cells}
    stage1, stage2, stage3, e2e = by["mhva_pt"], by["cm3t_caa"], by["cm3t_staged"], by["cm3t_e2e"]
    adapters = stage2.data["model"]["adapters"]
    assert [a["type"] for a in adapters] == ["mhva", "prefix", "caa"]
    assert adapters[0]["init_from"] == adapters[1]["init_from"] == str(stage1.output_dir)
    assert not adapters[0]["trainable"] and not adapters[1]["trainable"] and adapters[2]["trainable"]
    assert adapters[2]["freeze"] == ["fusion"] and not adapters[2]["init_from"]
    # stage 3: every adapter from stage 2, only the CAA's fusion trains
    adapters = stage3.data["model"]["adapters"]
    assert {a["init_from"] for a in adapters} == {str(stage2.output_dir)}
    assert not adapters[0]["trainable"] and not adapters[1]["trainable"]
    assert adapters[2]["trainable"] and adapters[2]["train_only"] == ["fusion"] and not adapters[2]["freeze"]
    assert stage3.after == [stage2.name] and stage2.after == [stage1.name] and stage1.after == [] and e2e.after == []
    assert [[c.variant for c in w] for w in waves(cells, set())] == [["mhva_pt", "cm3t_e2e"], ["cm3t_caa"], ["cm3t_staged"]]
    rest = [c for c in cells if c is not stage1]  # stage 1 finished earlier: stage 2 runs in the first wave
    assert [[c.variant for c in w] for w in waves(rest, {stage1.name})] == [["cm3t_caa", "cm3t_e2e"], ["cm3t_staged"]]
    # stage 1 changed (another lr here) -> another folder -> stages 2 and 3 are other cells too
    again = {c.variant: c for c in expand(camp, STAGED, ["profile=tiny", "optim.lr=0.002"], tmp_path)}
    assert again["cm3t_caa"].key != stage2.key and again["cm3t_staged"].key != stage3.key


def test_a_cell_placeholder_must_name_an_earlier_variant():
    assert fill_cells(["a={cell:x}", "b=1"], {"x": "/runs/x"}, "here") == (["a=/runs/x", "b=1"], ["x"])
    with pytest.raises(ConfigError, match=r"here: \{cell:later\} names no earlier variant .*\['x'\]"):
        fill_cells(["a={cell:later}"], {"x": "/runs/x"}, "here")
