"""After training, end to end with real Ray, MLflow (sqlite store + model registry) and mp4 files:
best checkpoint + early stopping, `vidpeft evaluate`, `predict`, `export` and the MLflow pyfunc model.

One run is trained once (module fixture) and every test reads it: a frozen tiny ViT loaded from a local
backbone checkpoint, the demo's adapters, two evaluation views per video, `checkpoint.metric=epoch` with
mode min (its best is epoch 0 whatever the data: a metric that peaks before the last epoch by construction)
and `optim.patience=2`, so the run must stop after epoch 2 of 6 and keep epoch 0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from tests.conftest import DEMO_CONFIG

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def run(ray_session, tmp_path_factory):
    import timm
    import torch
    from safetensors.torch import save_file

    from components.data.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("after")
    manifest = make_synthetic_dataset(root / "data", num_classes=4, clips_per_class=6, frames=16, size=32, seed=1)
    torch.manual_seed(3)  # a "pretrained" backbone file, as a user would have: the run must not need it later
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8,
                            embed_dim=64, depth=4, num_heads=4)
    backbone = root / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(backbone))
    out, uri = root / "run", f"sqlite:///{root}/mlflow.db"
    args = ["train", "--config", str(DEMO_CONFIG)]
    for kv in (f"data.manifest={manifest}", f"output_dir={out}", f"tracking.tracking_uri={uri}", "optim.epochs=6",
               f"model.backbone.checkpoint={backbone}", "data.eval_clips=2", "optim.patience=2",
               "checkpoint.metric=epoch", "checkpoint.mode=min", "checkpoint.keep=1"):
        args += ["--set", kv]
    assert main(args) == 0
    return {"root": root, "out": out, "uri": uri, "manifest": manifest, "backbone": backbone}


def _folder_with_a_corrupt_video(r, name="vids") -> Path:
    """Three val mp4s, one truncated mp4, and a text file the folder search must ignore."""
    import pyarrow.parquet as pq_

    val = [p for p, s in zip(*[pq_.read_table(r["manifest"]).column(c).to_pylist() for c in ("video_path", "split")])
           if s == "val"][:3]
    folder = r["root"] / name
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    for p in val:
        shutil.copy(r["manifest"].parent / p, folder / "sub" / Path(p).name)
    good = (r["manifest"].parent / val[0]).read_bytes()
    (folder / "broken.mp4").write_bytes(good[: len(good) // 3])
    (folder / "notes.txt").write_text("not a video")
    return folder


def test_best_epoch_is_kept_and_patience_stops_the_run(run):
    from mlflow.tracking import MlflowClient
    from safetensors.torch import load_file

    m = json.loads((run["out"] / "metrics.json").read_text())
    assert m["best_epoch"] == 0 and m["epoch"] == 0 and m["last_epoch"] == 2  # stopped at epoch 2 of 0..5
    assert "optim.patience=2" in m["stop_reason"] and m["checkpoint_metric"] == "epoch"
    assert m["last"]["epoch"] == 2 and "val_top1" in m["last"]
    # the run's weights are epoch 0's checkpoint, which Ray kept by score (keep=1) beside the latest
    states = {}
    for state in (run["out"] / "ray").rglob("state.json"):
        states[json.loads(state.read_text())["epoch"]] = state.parent
    assert set(states) == {0, 2}, states  # epoch 1's checkpoint was neither best nor latest: deleted
    best, kept = load_file(str(states[0] / "weights.safetensors")), load_file(str(run["out"] / "weights.safetensors"))
    last = load_file(str(states[2] / "weights.safetensors"))
    assert best.keys() == kept.keys() and all((best[k] == kept[k]).all() for k in best)
    assert any((last[k] != kept[k]).any() for k in kept)
    history = MlflowClient(run["uri"]).get_metric_history(m["run_id"], "val_top1")
    assert sorted(h.step for h in history) == [0, 1, 2]


def test_evaluate_equals_the_training_validation(run, capfd):
    from mlflow.tracking import MlflowClient

    m = json.loads((run["out"] / "metrics.json").read_text())
    assert main(["evaluate", str(run["out"]), "--split", "val"]) == 0
    cap = capfd.readouterr()  # evaluated in this process: Ray's notes about the decoder pool are not the user's
    assert not any(n in cap.out + cap.err for n in RAY_NOISE), cap.out + cap.err
    ev = json.loads((run["out"] / "eval_val.json").read_text())
    assert ev["views"] == 2 and ev["clips"] == 8
    assert ev["metrics"]["top1"] == pytest.approx(m["val_top1"], abs=1e-6)
    assert ev["metrics"]["loss"] == pytest.approx(m["val_loss"], rel=1e-5)
    confusion = ev["confusion_matrix"]
    assert sum(map(sum, confusion)) == 8 and sum(confusion[i][i] for i in range(4)) / 8 == pytest.approx(m["val_top1"])
    header = (run["out"] / "confusion_val.csv").read_text().splitlines()[0]
    assert "dir_0deg" in header and (run["out"] / "confusion_val.png").stat().st_size > 1000
    run_data = MlflowClient(run["uri"]).get_run(m["run_id"]).data
    assert run_data.metrics["eval_val_top1"] == pytest.approx(m["val_top1"])
    arts = {a.path for a in MlflowClient(run["uri"]).list_artifacts(m["run_id"], "eval_val")}
    assert "eval_val/confusion_val.png" in arts


def test_predict_folder_with_a_corrupt_file_and_the_manifest(run, capfd):
    """At the default level: the progress lines, no Ray lines, and a --top-k above the class count said once
    and clamped."""
    folder = _folder_with_a_corrupt_video(run)
    preds = run["root"] / "preds.parquet"
    assert main(["predict", str(run["out"]), str(folder), "--out", str(preds), "--top-k", "9"]) == 0
    rows = pq.read_table(preds).to_pylist()
    assert len(rows) == 4  # three videos + the corrupt one; notes.txt is not a video
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 1 and "broken.mp4" in bad[0]["error"] and bad[0]["label"] is None
    for r in rows:
        if not r["error"]:
            assert r["label"] == r["top_k_labels"][0] and len(r["top_k_labels"]) == 4  # 9 clamped to 4 classes
            assert r["top_k_scores"] == sorted(r["top_k_scores"], reverse=True) and 0 < r["score"] <= 1
    cap = capfd.readouterr()
    shown = cap.out + cap.err
    assert not any(n in shown for n in RAY_NOISE), shown
    assert shown.count("--top-k 9: the model scores 4 classes") == 1 and "predicting 4 input clip(s)" in cap.out
    assert "(error)" in cap.out and "wrote 4 prediction row(s)" in cap.out
    assert "in this process" in cap.out  # one local model worker: the model runs in the command's process
    # the val split of the manifest (side features included), the model in a Ray Data actor pool as a run whose
    # config says scaling.in_process: false asks: top-1 accuracy is the run's val_top1
    m = json.loads((run["out"] / "metrics.json").read_text())
    mp = run["root"] / "val.parquet"
    in_ray = run["root"] / "run-in-ray"
    shutil.copytree(run["out"], in_ray, dirs_exist_ok=True)
    cfg = (in_ray / "config.yaml").read_text()
    (in_ray / "config.yaml").write_text(cfg.replace("in_process: auto", "in_process: false"))
    assert main(["predict", str(in_ray), str(run["manifest"]), "--split", "val", "--out", str(mp)]) == 0
    assert "on 1 model worker(s)" in capfd.readouterr().out
    import pyarrow.parquet as pq_

    table = pq_.read_table(run["manifest"]).to_pylist()
    names = json.loads((run["out"] / "labels.json").read_text())["class_names"]
    truth = {r["clip_id"]: names[r["label"]] for r in table if r["split"] == "val"}
    got = pq.read_table(mp).to_pylist()
    assert len(got) == len(truth) == 8
    assert sum(r["label"] == truth[r["clip_id"]] for r in got) / 8 == pytest.approx(m["val_top1"])


RAY_NOISE = ("core_worker.cc", "has constructor arguments in the object store", "Progress bars disabled",
             "execution finished in", "streaming_executor.py",
             # an idle Ray worker aborting as it exits (pipelines/runtime/ray_compat.keep_idle_workers)
             "Mutex corrupt", "SIGABRT", "Fatal Python error")


def test_quiet_predict_and_evaluate_print_only_their_results(run, tmp_path, capfd, monkeypatch):
    """-q: no progress lines, no Ray lines (Ray Data's logger on the driver, the core worker's false alarm
    about the decoder actor pool), the results only. The default level: the test above."""
    from pipelines.runtime.ray_env import LOG_LEVEL_ENV

    monkeypatch.setenv(LOG_LEVEL_ENV, "info")  # main() sets it from -q: restored after the test
    folder = _folder_with_a_corrupt_video(run, "vids_quiet")
    preds = tmp_path / "q.parquet"
    assert main(["predict", str(run["out"]), str(folder), "--out", str(preds), "-q"]) == 0
    cap = capfd.readouterr()
    text = cap.out + cap.err
    assert not any(n in text for n in RAY_NOISE), text
    assert "predicting" not in text and "wrote 4 prediction row(s)" in cap.out and "(error)" in cap.out
    assert all(len(r["top_k_labels"]) == 4 for r in pq.read_table(preds).to_pylist() if not r["error"])
    assert main(["evaluate", str(run["out"]), "--split", "val", "--out", str(tmp_path), "--no-mlflow", "-q"]) == 0
    cap = capfd.readouterr()
    assert "evaluating" not in cap.out + cap.err and "[vidpeft] val: 8 clips" in cap.out
    assert not any(n in cap.out + cap.err for n in RAY_NOISE), cap.out + cap.err


def test_export_and_mlflow_model_score_as_the_run(run, tmp_path):
    folder = _folder_with_a_corrupt_video(run, "vids2")
    ref = tmp_path / "ref.parquet"
    assert main(["predict", str(run["out"]), str(folder), "--out", str(ref)]) == 0
    export = tmp_path / "export"
    assert main(["export", str(run["out"]), "--out", str(export), "--register", "vidpeft-after-test"]) == 0
    assert (export / "model.safetensors").is_file()

    # without the backbone checkpoint the run dir cannot be rebuilt, the export can
    moved = run["backbone"].with_suffix(".moved")
    run["backbone"].rename(moved)
    try:
        from_file = tmp_path / "from_export.parquet"
        assert main(["predict", str(export / "model.safetensors"), str(folder), "--out", str(from_file)]) == 0
        # evaluate takes the export too: the run's validation metrics again, logged to a new MLflow run
        assert main(["evaluate", str(export / "model.safetensors"), "--split", "val", "--out", str(tmp_path)]) == 0
    finally:
        moved.rename(run["backbone"])
    m = json.loads((run["out"] / "metrics.json").read_text())
    ev = json.loads((tmp_path / "eval_val.json").read_text())
    assert ev["metrics"]["top1"] == pytest.approx(m["val_top1"]) and ev["mlflow_run_id"] != m["run_id"]
    assert ev["metrics"]["loss"] == pytest.approx(m["val_loss"], rel=1e-5)
    expected = {r["video_path"]: r for r in pq.read_table(ref).to_pylist()}
    for r in pq.read_table(from_file).to_pylist():
        assert r["top_k_labels"] == expected[r["video_path"]]["top_k_labels"]
        assert r["top_k_scores"] == pytest.approx(expected[r["video_path"]]["top_k_scores"], abs=1e-5)

    # the registered MLflow model, in a fresh process that has neither vidpeft on its path nor the run
    code = ("import json, sys, mlflow, pandas as pd\n"
            "m = mlflow.pyfunc.load_model('models:/vidpeft-after-test/1')\n"
            "df = m.predict(pd.DataFrame({'video_path': sys.argv[1:]}))\n"
            "print('ROWS=' + df.to_json(orient='records'))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = run["uri"]
    paths = sorted(str(p) for p in folder.rglob("*.mp4"))
    proc = subprocess.run([sys.executable, "-c", code, *paths], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("ROWS="))[5:])
    assert [r["video_path"] for r in rows] == paths  # input order kept
    for r in rows:
        if r["error"]:
            assert "broken.mp4" in r["video_path"]
            continue
        assert r["top_k_labels"] == expected[r["video_path"]]["top_k_labels"]
        assert r["top_k_scores"] == pytest.approx(expected[r["video_path"]]["top_k_scores"], abs=1e-5)


def test_bad_inputs_are_one_line_errors(run, tmp_path, capsys):
    from components.data.manifest import read_manifest, write_manifest

    def err(*argv) -> str:
        assert main(list(argv)) == 2
        text = capsys.readouterr().err.strip()
        assert len(text.splitlines()) == 1, text
        return text

    out = str(run["out"])
    assert "nowhere.mp4" in err("predict", out, str(tmp_path / "nowhere.mp4"))
    (tmp_path / "classes.txt").write_text("x\ny\n")  # open vocabulary needs M2-CLIP: said on the driver
    assert "--classes needs a run with a text tower (model.kind: m2clip)" in err("predict", out, str(tmp_path / "nowhere.mp4"), "--classes",
                                                   str(tmp_path / "classes.txt"))
    (tmp_path / "clip.xyz").write_bytes(b"\0")
    msg = err("predict", out, str(tmp_path / "clip.xyz"))
    assert "clip.xyz" in msg and "extension" in msg
    empty = tmp_path / "no_weights"
    empty.mkdir()
    shutil.copy(run["out"] / "config.yaml", empty / "config.yaml")
    assert "weights.safetensors" in err("evaluate", str(empty), "--split", "val")
    m = read_manifest(run["manifest"], check_files=False)
    other = run["manifest"].parent / "other.parquet"  # beside the original: its relative video paths still hold
    write_manifest(other, m.table, class_names=["a", "b", "c", "d"])
    assert "other.parquet" in err("evaluate", out, "--manifest", str(other), "--split", "val")


def test_evaluate_views_workers_chunks_and_scores(run, tmp_path, capsys):
    """--views 2x3 on one worker in one call per batch, then on 2 workers with at most 4 views through the
    model at once: the same metrics and per-video scores; the scores files are the same rows."""
    import numpy as np

    # bad protocol options are one-line errors, before Ray works
    out = str(run["out"])
    assert main(["evaluate", out, "--split", "val", "--views", "4by3"]) == 2
    assert "expected CLIPSxCROPS" in capsys.readouterr().err
    assert main(["evaluate", out, "--split", "val", "--views", "2x3", "--clips", "2"]) == 2
    assert "--views CxS replaces --clips and --crops" in capsys.readouterr().err

    common = ["--split", "val", "--views", "2x3", "--no-mlflow"]
    assert main(["evaluate", out, *common, "--out", str(tmp_path / "one"), "--save-scores", str(tmp_path / "one.parquet"),
                 "--max-views", "0"]) == 0
    assert main(["evaluate", out, *common, "--out", str(tmp_path / "two"), "--save-scores", str(tmp_path / "two.parquet"),
                 "--workers", "2", "--max-views", "4"]) == 0
    assert "on 2 workers" in capsys.readouterr().out
    one, two = (json.loads((tmp_path / d / "eval_val.json").read_text()) for d in ("one", "two"))
    assert one["views"] == two["views"] == 6 and one["views_spec"] == "2x3" and two["workers"] == 2
    val = pq.read_table(run["manifest"])["split"].to_pylist().count("val")
    assert one["clips"] == two["clips"] == val
    for k in ("top1", "top5", "mean_class_accuracy"):
        assert two["metrics"][k] == one["metrics"][k], k
    assert two["metrics"]["loss"] == pytest.approx(one["metrics"]["loss"], rel=1e-6)
    assert two["confusion_matrix"] == one["confusion_matrix"]

    a, b = (pq.read_table(tmp_path / f) for f in ("one.parquet", "two.parquet"))
    assert a.column_names == ["clip_id", "label", "scores", "pred"] and a.num_rows == val
    assert a["clip_id"].to_pylist() == b["clip_id"].to_pylist() and a["label"].equals(b["label"])
    sa, sb = np.array(a["scores"].to_pylist()), np.array(b["scores"].to_pylist())
    assert sa.shape == (val, 4) and np.allclose(sa.sum(axis=1), 1, atol=1e-5)  # softmax probabilities
    assert np.allclose(sa, sb, atol=1e-6) and a["pred"].equals(b["pred"])
    meta = json.loads(a.schema.metadata[b"vidpeft.scores"])
    assert meta["views"] == "2x3" and meta["task"] == "single_label" and len(meta["output_names"]) == 4
    # the file's labels and predictions give the reported top-1
    assert np.mean(np.array(a["pred"].to_pylist()) == np.array(a["label"].to_pylist())) == one["metrics"]["top1"]
