"""Every table of the two papers is a campaign (tune_spaces/campaigns/), with every row of the paper's
table: the papers' own methods as variants (run), other methods as references (the paper's number).
The end-to-end test runs all of them on the tiny synthetic stand-ins (`--set profile=tiny`) in one
shared Ray instance and checks each produced table; the UCF101 zero-shot protocol runs over the
stand-ins' three splits."""

from __future__ import annotations

import re
from pathlib import Path
from statistics import mean, stdev

import pytest

from pipelines.search.campaign import expand, load_campaign

CAMPAIGNS = Path(__file__).resolve().parents[3] / "tune_spaces" / "campaigns"

# The rows of each paper table, transcribed from the papers (../shared/seeds/): method (backbone).
PAPER_ROWS = {
    "cm3t_table1.yaml": ["M&M Mix (ViViT)", "CM3T (Video Swin-B)", "CM3T (CLIP-B)", "Dual-Path Adapters (ViT-B)",
                         "ST-Adapters (ViT-B)", "Dual-Path Adapters (CLIP-B)", "ST-Adapters (CLIP-B)",
                         "Adaptformer + PT (Video Swin-B)", "MHVA + PT (Video Swin-B)", "MHVA + PT (CLIP-B)",
                         "LoRA (Video Swin-B)"],
    "cm3t_table4.yaml": ["Full finetuning (RGB)", "MHVA + PT (RGB)", "Full finetuning + CAA (multimodal)",
                         "CM3T (multimodal)"],
    "cm3t_table5.yaml": ["MTV-B (RGB)", "MHVA + PT (RGB)", "M&M Mix (multimodal)", "CM3T: MHVA + PT + CAA",
                         "MHVA + PT + (MMCA)"],
    "cm3t_table6.yaml": ["Full finetuning (ViViT-B)", "MHVA + PT (ViViT-B)", "CM3T (ViViT-B)"],
    "cm3t_ablations.yaml": ["MHVA + PT (learned s, ReLU prefix)", "MHVA + PT, fixed s = 4.0", "MHVA + PT, tanh prefix",
                            "PT alone"],
    "m2clip_table4.yaml": ["Baseline (CLIP zero-shot)", "+ TED-Adapter", "+ Multimodal-Adapter",
                           "+ Multimodal-Adapter + Multi-Task Decoder", "LoRA (both towers)"],
    "m2clip_table5.yaml": ["blocks 1-5, TE + TD", "blocks 6-12, TE + TD", "blocks 1-12, TE only", "blocks 1-12, TD only",
                           "blocks 1-12, TE + TD"],
    "m2clip_table6.yaml": ["0 text adapters", "1 text adapter", "6 text adapters", "12 text adapters"],
    "m2clip_table7.yaml": ["Contrastive", "Contrastive + CMC", "Contrastive + CMC + MLM", "Contrastive + CMC + MLM + VC"],
}
# Table 4's columns: one per dataset, each with its own metric
COLUMNS = {"cm3t_table4.yaml": {"EK-100": "val_top1", "UDIVA": "val_mse", "MPIIGI": "val_mAP"}}


def test_every_paper_table_has_a_campaign_with_every_row():
    # demo: the demo's grid; cm3t_staged: CM3T's training order (Sec. 3.2) beside its end-to-end rows, no table
    shipped = {p.name for p in CAMPAIGNS.glob("*.yaml")} - {"demo.yaml", "cm3t_staged.yaml"}
    assert shipped == set(PAPER_ROWS)
    for name, rows in PAPER_ROWS.items():
        camp = load_campaign(CAMPAIGNS / name)
        labels = [v.label for v in camp.variants.values()] + [r.label for r in camp.references.values()]
        assert sorted(labels) == sorted(rows), name
        assert all(v.paper or k in ("pt_only", "lora") for k, v in camp.variants.items()), name  # the number to reproduce
        for label, metric in COLUMNS.get(name, {}).items():
            assert any(d.label == label and (d.metric or camp.metric) == metric for d in camp.datasets.values())


@pytest.mark.parametrize("name", sorted(PAPER_ROWS))
def test_campaign_cells_resolve_at_paper_size_and_tiny(name, tmp_path):
    path = CAMPAIGNS / name
    camp = load_campaign(path)
    full = expand(camp, path, [], tmp_path)
    tiny = expand(camp, path, ["profile=tiny"], tmp_path)
    assert len(full) == len(camp.datasets) * len(camp.variants) * len(camp.seeds)
    assert len(tiny) == len(camp.datasets) * len(camp.variants)  # the tiny profile: one seed
    for cell in full:
        backbone = cell.data["model"]["backbone"]
        assert backbone["name"] in ("swin3d_b", "ViT-B-16", "ViT-B-16-quickgelu", "vit_base_patch16_224"), cell.name
        assert backbone["img_size"] == 224 and "standins" not in cell.data["data"]["manifest"]
    for cell in tiny:
        backbone = cell.data["model"]["backbone"]
        assert backbone["name"] in ("swin3d_t", "vidpeft-tiny-clip12", "vit_tiny_patch16_224"), cell.name
        assert backbone["img_size"] == 32 and backbone["checkpoint"] is None and cell.data["optim"]["epochs"] == 1
        assert "/standins/" in cell.data["data"]["manifest"]


def row_cells(md: str, label: str) -> list[str]:
    line = next(x for x in md.splitlines() if x.startswith(f"| {label} |") or x.startswith(f"| {label} ("))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.fixture(scope="module")
def standins_dir(tmp_path_factory):
    """The tiny synthetic stand-ins every campaign's tiny profile reads (written once)."""
    from components.data.standins import make_standins

    root = tmp_path_factory.mktemp("paper_tables")
    make_standins(root / "standins")
    return root


@pytest.mark.e2e
@pytest.mark.paper_tables
@pytest.mark.parametrize("name", sorted(PAPER_ROWS))
def test_every_paper_table_runs_on_tiny_standins(name, ray_session, standins_dir, monkeypatch, capsys):
    """Each campaign end to end at the tiniest size (1 epoch, 12 clips per stand-in, 32 px, tiny
    backbones, one seed, two cells at once), producing its paper-shaped table."""
    from pipelines.cli import main

    monkeypatch.chdir(standins_dir)  # campaigns read standins/ and log to ./mlflow.db, as a user running them
    rows = PAPER_ROWS[name]
    out = standins_dir / "tables" / name
    assert main(["ablate", "--campaign", str(CAMPAIGNS / name), "--set", "profile=tiny",
                 "--max-concurrent", "2", "--out", str(out)]) == 0, name
    md = (out / "report.md").read_text()
    camp = load_campaign(CAMPAIGNS / name)
    run_labels = {v.label for v in camp.variants.values()}
    for label in rows:
        cells = row_cells(md, label)
        measured = cells[4::3] if not camp.metrics else cells[4::5]
        if label in run_labels:  # measured in every column, with trainable % and GFLOPs
            assert all(re.fullmatch(r"-?\d+\.\d+ ± \d+\.\d+", m) for m in measured), (name, label, cells)
            # one trainable % per distinct model in the row (Table 4: the datasets' modalities differ)
            number_list = r"\d+\.\d+( / \d+\.\d+)*"
            assert re.fullmatch(number_list, cells[1]) and re.fullmatch(number_list, cells[3]), (name, label, cells)
            assert all(float(g) > 0 for g in cells[3].split(" / ")), (name, label, cells)
        else:  # another method: the paper's number only
            assert set(measured) == {"–"} and "not run" in cells[0], (name, label, cells)
    for label, metric in COLUMNS.get(name, {}).items():
        assert f"{label} {metric}" in md
    if camp.metrics:  # M2-CLIP Table 6: zero-shot UCF101 beside K400 for every row
        assert "K400 zeroshot_top1 (%)" in md
        for label in rows:
            assert re.fullmatch(r"\d+\.\d ± \d+\.\d", row_cells(md, label)[7]), (label, md)


@pytest.mark.e2e
def test_ucf101_zero_shot_protocol_is_mean_and_std_over_three_splits(ray_session, tmp_path, monkeypatch):
    import json

    from components.data.manifest import read_manifest
    from components.data.standins import make_standins
    from pipelines.cli import main

    monkeypatch.chdir(tmp_path)
    written = make_standins("standins")
    folds = [str(written[f"ucf101_fold{k}"]) for k in (1, 2, 3)]
    tests = [set(read_manifest(f).split("test")["clip_id"].to_pylist()) for f in folds]
    assert not (tests[0] & tests[1]) and not (tests[1] & tests[2]) and all(tests)  # three different test lists
    preset = Path(__file__).resolve().parents[3] / "pipelines" / "configs" / "presets" / "m2clip" / "zeroshot_frozen.yaml"
    args = ["zeroshot-splits", "--config", str(preset), "--output", str(tmp_path / "zs.json"),
            "--set", "model.backbone.name=vidpeft-tiny-clip", "--set", "model.backbone.img_size=32",
            "--set", "model.backbone.num_frames=4", "--set", "model.backbone.checkpoint=null"]
    for f in folds:
        args += ["--manifest", f]
    assert main(args) == 0
    summary = json.loads((tmp_path / "zs.json").read_text())
    top1 = [s["top1"] for s in summary["splits"]]
    assert len(top1) == 3 and [s["clips"] for s in summary["splits"]] == [len(t) for t in tests]
    assert summary["top1_mean"] == pytest.approx(mean(top1)) and summary["top1_std"] == pytest.approx(stdev(top1))
