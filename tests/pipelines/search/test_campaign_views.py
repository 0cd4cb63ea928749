"""Campaign eval_views: checked when the campaign loads, and shown in the report beside one view."""

from __future__ import annotations

import pytest

from components.config import ConfigError
from pipelines.search.campaign import expand, load_campaign
from pipelines.search.campaign_views import check_views
from pipelines.search.report import markdown, summarise
from tests.pipelines.search.test_campaign_e2e import write_campaign


def test_eval_views_are_checked_before_anything_runs(tmp_path):
    path = write_campaign(tmp_path)
    path.write_text(path.read_text() + "eval_views: 4by3\n")
    with pytest.raises(ConfigError, match="expected CLIPSxCROPS"):
        load_campaign(path)
    path.write_text(path.read_text().replace("4by3", "2x3"))
    camp = load_campaign(path)
    assert camp.eval_views == "2x3"
    cells = expand(camp, path, [], tmp_path / "camp")
    check_views(path, cells, "2x3")  # the demo decodes at 1.15 x the crop: 3 crops fit
    flat = expand(camp, path, ["data.decode_scale=1.0"], tmp_path / "camp")
    with pytest.raises(ConfigError, match=r"eval_views 2x3, cell a/adapters/seed=0: .*decode_scale"):
        check_views(path, flat, "2x3")


def test_report_shows_one_view_and_the_protocols_views_side_by_side():
    layout = {"name": "t", "metric": "val_top1", "mode": "max", "seeds": [0, 1], "eval_views": "4x3",
              "datasets": [{"name": "a", "label": "A"}], "variants": [{"name": "v", "label": "V", "paper": {}}],
              "references": [{"name": "r", "label": "R", "paper": {"a": 50.0}, "note": "not run"}]}
    rows = [{"dataset": "a", "variant": "v", "seed": s, "key": str(s), "run_id": f"r{s}", "value": 0.5, "epochs": 1,
             "trainable_pct": 1.0, "trainable_pct_with_head": 2.0, "gflops": 0.1, "extra": {},
             "best": best, "views": views} for s, best, views in ((0, 0.5, 0.6), (1, 0.6, 0.8))]
    text = markdown(layout, summarise(layout, rows))
    head, _, row, ref = text.strip().splitlines()[-4:]
    assert "| A best, 1 view (%) | A best, 4x3 views (%) |" in head
    assert row.endswith("| 55.0 ± 7.1 | 70.0 ± 14.1 |")
    assert ref.count("|") == head.count("|")  # the reference row has the same columns
    layout.pop("eval_views")
    assert "views" not in markdown(layout, summarise(layout, rows))  # without eval_views: the table as before


def test_report_has_a_column_group_per_dataset_and_a_row_per_variant():
    """Two datasets x two variants (the e2e campaign runs one dataset: each cell is a full run)."""
    layout = {"name": "t", "metric": "val_top1", "mode": "max", "seeds": [0],
              "datasets": [{"name": "a", "label": "A"}, {"name": "b", "label": "B"}],
              "variants": [{"name": "v", "label": "V", "paper": {}}, {"name": "w", "label": "W", "paper": {}}]}
    rows = [{"dataset": d, "variant": v, "seed": 0, "key": d + v, "run_id": "r" + d + v, "value": value, "epochs": 1,
             "trainable_pct": 1.0, "trainable_pct_with_head": 2.0, "gflops": 0.1, "extra": {}}
            for d, v, value in (("a", "v", 0.5), ("b", "v", 0.25), ("a", "w", 0.75), ("b", "w", 0.125))]
    head, _, v, w = markdown(layout, summarise(layout, rows)).strip().splitlines()[-4:]
    assert head.endswith("| A val_top1 (%) | A paper | A epochs | B val_top1 (%) | B paper | B epochs |")
    assert v.startswith("| V |") and v.endswith("| 50.0 ± 0.0 | – | 1.0 | 25.0 ± 0.0 | – | 1.0 |")
    assert w.startswith("| W |") and w.endswith("| 75.0 ± 0.0 | – | 1.0 | 12.5 ± 0.0 | – | 1.0 |")
