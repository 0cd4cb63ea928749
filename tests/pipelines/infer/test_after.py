"""After training, without Ray: checkpoint metric defaults, patience, input expansion, per-class report,
windows, and the standalone export's round trip on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from components.config import ConfigError, resolve
from pipelines.run.best import Patience, checkpoint_metric
from pipelines.config import ExperimentConfig


def _cfg(*overrides):
    return resolve(ExperimentConfig, [], list(overrides))


@pytest.mark.parametrize("task,metric,mode", [("single_label", "val_top1", "max"), ("multi_label", "val_mAP", "max"),
                                              ("regression", "val_mse", "min")])
def test_the_default_checkpoint_metric_is_the_tasks_primary_one(task, metric, mode):
    assert checkpoint_metric(_cfg(f"model.head.task={task}")) == (metric, mode)


def test_checkpoint_metric_choices_and_errors():
    assert checkpoint_metric(_cfg("checkpoint.metric=val_loss")) == ("val_loss", "min")
    assert checkpoint_metric(_cfg("checkpoint.metric=val_top5", "checkpoint.mode=min")) == ("val_top5", "min")
    assert checkpoint_metric(_cfg("data.val_split=")) == (None, "max")  # no validation: the latest is the result
    with pytest.raises(ConfigError, match="optim.patience"):
        checkpoint_metric(_cfg("data.val_split=", "optim.patience=2"))
    with pytest.raises(ConfigError, match="val_split"):
        checkpoint_metric(_cfg("data.val_split=", "checkpoint.metric=val_top1"))
    with pytest.raises(ConfigError, match="checkpoint: mode"):
        _cfg("checkpoint.mode=best")


def test_patience_counts_epochs_without_improvement_and_survives_a_restore():
    p = Patience("val_loss", "min", patience=2)
    assert p.update(0, {"val_loss": 1.0}) is None
    assert p.update(1, {"val_loss": 0.8}) is None
    assert p.update(2, {"val_loss": 0.9}) is None  # one epoch without improvement
    resumed = Patience("val_loss", "min", patience=2)
    resumed.restore(p.state())
    reason = resumed.update(3, {"val_loss": float("nan")})  # NaN never improves
    assert reason and "val_loss" in reason and "at epoch 2" in reason and resumed.exhausted()  # 1-based, as printed
    assert Patience("val_top1", "max", 0).update(0, {"val_top1": 0.1}) is None  # 0 = never stop
    with pytest.raises(ConfigError, match="val_top9"):
        Patience("val_top9", "max", 1).update(0, {"val_top1": 0.5})


def test_class_report_per_class_accuracy_and_confusion():
    from pipelines.infer.evaluate import class_report

    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.1, 0.9, 0.0]])
    rep = class_report(scores, np.array([0, 1, 1, 1]), ["a", "b", "c"])
    assert rep["confusion"].tolist() == [[1, 0, 0], [1, 2, 0], [0, 0, 0]]
    assert rep["per_class_accuracy"] == {"a": 1.0, "b": pytest.approx(2 / 3), "c": None}  # c has no clip
    assert rep["mean_class_accuracy"] == pytest.approx((1 + 2 / 3) / 2)


def test_windows_cover_the_video(tmp_path):
    from components.data.synth import write_mp4
    from pipelines.infer.predict_core import window_ranges

    path = tmp_path / "v.mp4"
    write_mp4(path, np.zeros((40, 32, 32, 3), np.uint8), fps=8)  # 5 s
    wins = window_ranges(str(path), 2.0, 1.5)
    assert wins[0] == (0.0, 2.0) and wins[-1][1] == pytest.approx(5.0)
    assert all(b - a == pytest.approx(2.0) for a, b in wins)
    assert window_ranges(str(path), 10.0, 10.0) == [(0.0, 5.0)]


def test_a_prediction_table_with_rows_missing_is_refused():
    from pipelines.infer.predict import check_complete

    check_complete(4, 4, windowed=False)
    check_complete(9, 4, windowed=True)  # windows: one or more rows per input
    for written, windowed in ((3, False), (5, False), (3, True)):
        with pytest.raises(RuntimeError, match=f"{written} row\\(s\\) back for 4 input clip"):
            check_complete(written, 4, windowed)


def test_inputs_folders_files_and_their_errors(tmp_path):
    from pipelines.infer.predict import expand_inputs
    from pipelines.infer.trained import Trained

    t = Trained(_cfg(), ["a", "b"])
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/x.mp4", "d/e/y.MKV", "d/readme.txt", "z.mp4"):
        (tmp_path / name).write_bytes(b"\0")
    rows = expand_inputs([str(tmp_path / "d"), str(tmp_path / "z.mp4")], t).to_pylist()
    assert [r["clip_id"] for r in rows] == ["e/y", "x", "z"]
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        expand_inputs([str(tmp_path / "missing.mp4")], t)
    with pytest.raises(ConfigError, match="readme.txt.*extension"):
        expand_inputs([str(tmp_path / "d" / "readme.txt")], t)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no video files"):
        expand_inputs([str(tmp_path / "empty")], t)


def test_standalone_export_round_trip_needs_no_backbone_file(tmp_path):
    """A run dir (trainable weights + a backbone checkpoint) -> export -> the same outputs, backbone file gone."""
    import json

    import torch
    from safetensors.torch import save_file

    from components.checkpoint import save_weights, trainable_state_dict
    from components.config import dump_yaml, to_dict
    from pipelines.infer.export import merge_report, write_standalone
    from pipelines.infer.trained import build_trained, load_trained, write_labels
    from tests.conftest import TINY_VIT

    backbone = tmp_path / "vit.safetensors"
    cfg = resolve(ExperimentConfig, [], [f"model.backbone={json.dumps({**TINY_VIT, 'checkpoint': str(backbone)})}",
                                         "model.adapters=[{type: bottleneck, sites: [mlp], bottleneck: 4}]",
                                         "model.head.num_outputs=3"])
    import timm

    vit = timm.create_model(TINY_VIT["name"], pretrained=False, num_classes=0, img_size=32, **TINY_VIT["kwargs"])
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(backbone))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_yaml(cfg))
    write_labels(run, ["a", "b", "c"], None)
    from components.model import build_model

    model = build_model(cfg.model, 3)
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)  # "trained" adapters and head (zero-init would hide a bad load)
    save_weights(run / "weights.safetensors", trainable_state_dict(model), to_dict(cfg.model))

    video = torch.randint(0, 255, (2, 4, 32, 32, 3), dtype=torch.uint8)
    expected = build_trained(load_trained(run))({"video": video})["logits"]
    out = write_standalone(load_trained(run), tmp_path / "model.safetensors")
    report = merge_report(load_trained(run))
    assert report[0].startswith("bottleneck") and "not mergeable" in report[0]
    backbone.unlink()
    with pytest.raises(FileNotFoundError, match="--backbone-checkpoint"):
        load_trained(run)
    exported = load_trained(out)
    assert exported.standalone and exported.class_names == ["a", "b", "c"]
    got = build_trained(exported)({"video": video})["logits"]
    torch.testing.assert_close(got, expected)


def _tiny_classifier_run(root) -> str:
    """A loadable run directory (config, labels, weights) of a tiny 3-class classifier, without training."""
    import json

    from components.checkpoint import save_weights, trainable_state_dict
    from components.config import dump_yaml, to_dict
    from components.model import build_model
    from pipelines.infer.trained import write_labels
    from tests.conftest import TINY_VIT

    cfg = _cfg(f"model.backbone={json.dumps(TINY_VIT)}", "model.head.num_outputs=3")
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_yaml(cfg))
    write_labels(run, ["a", "b", "c"], None)
    save_weights(run / "weights.safetensors", trainable_state_dict(build_model(cfg.model, 3)), to_dict(cfg.model))
    return str(run)


@pytest.mark.parametrize("argv,names", [
    (["predict", "RUN", "clip.mp4", "--classes", "classes.txt"], "--classes needs a run with a text tower (model.kind: m2clip)"),
    (["predict", "RUN", "clip.mp4", "--out", "preds.csv"], "--out preds.csv"),
    (["predict", "RUN", "clip.mp4", "--out", "preds"], "--out preds"),
    (["predict", "RUN", "clip.mp4", "--window-sec", "0"], "--window-sec"),
    (["predict", "RUN", "clip.mp4", "--window-sec", "-2"], "--window-sec"),
    (["predict", "RUN", "clip.mp4", "--window-sec", "2", "--stride-sec", "0"], "--stride-sec"),
    (["predict", "RUN", "clip.mp4", "--stride-sec", "1"], "--stride-sec needs --window-sec"),
    (["predict", "RUN", "clip.mp4", "--top-k", "0"], "--top-k"),
    (["predict", "RUN", "clip.mp4", "--workers", "0"], "--workers"),
    (["evaluate", "RUN", "--clips", "0"], "--clips"),
    (["evaluate", "RUN", "--crops", "-1"], "--crops"),
    (["zeroshot", "--checkpoint", "RUN", "--classes", "classes.txt", "--manifest", "m.parquet", "--clips", "0"],
     "--clips"),
    (["zeroshot", "--checkpoint", "RUN", "--classes", "classes.txt", "--manifest", "m.parquet", "--template", "a"],
     "--template 'a'"),
])
def test_predict_evaluate_zeroshot_options_are_one_line_errors_before_ray(tmp_path, capsys, monkeypatch, argv, names):
    """Checks that used to fail inside a Ray Data actor (a 250-line traceback) or were silently ignored
    (--out x.csv wrote Parquet, --clips 0 meant the default) stop on the driver: one line, exit code 2."""
    import pipelines.runtime.ray_env
    import pipelines.infer.zeroshot
    from pipelines.cli import main

    def started(*_a, **_k):
        raise AssertionError("Ray was started for an option the driver could have checked")

    monkeypatch.setattr(pipelines.runtime.ray_env, "ensure_ray", started)
    monkeypatch.setattr(pipelines.infer.zeroshot, "ensure_ray", started)
    monkeypatch.chdir(tmp_path)
    from components.data.synth import write_mp4

    write_mp4(tmp_path / "clip.mp4", np.zeros((8, 32, 32, 3), np.uint8), fps=8)
    (tmp_path / "classes.txt").write_text("x\ny\n")
    run = _tiny_classifier_run(tmp_path)
    assert main([run if a == "RUN" else a for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("vidpeft: error: ") and names in err, err


def test_the_driver_drops_rays_native_false_alarm_and_keeps_every_other_line(capfd, monkeypatch):
    """Ray's C++ core worker writes its actor-pool false alarm to the driver's fd 2 (predict and zeroshot
    execute their datasets on the driver); the filter keeps everything else, in order, as it comes."""
    import os

    from pipelines.runtime.driver_stderr import dropping_lines, quiet_driver_lines
    from pipelines.runtime.ray_env import LOG_LEVEL_ENV, _false_alarm

    alarm = ("[2026-11-30 18:57:04,055 E 25604 25604] core_worker.cc:2465: Actor with class name: 'MapWorker("
             "MapBatches(PredictDecoder))' and ID: '01' has constructor arguments in the object store and "
             "max_restarts > 0. If the arguments ...\n")
    with dropping_lines(_false_alarm):
        os.write(2, b"first\n" + alarm.encode() + b"sec")
        os.write(2, b"ond\n")
        os.write(2, b"no newline at the end")
    assert capfd.readouterr().err == "first\nsecond\nno newline at the end"
    monkeypatch.setenv(LOG_LEVEL_ENV, "verbose")
    with quiet_driver_lines():  # --verbose: Ray's own lines too
        os.write(2, alarm.encode())
    assert capfd.readouterr().err == alarm


def test_evaluation_prints_progress_per_batch_and_its_metrics_match(ray_session):
    """`vidpeft evaluate`'s pass over a Ray dataset of decoded clips: a progress line as configured
    (here every batch: step/total, clips/s, ETA), and the metrics of the same clips as the engine's."""
    import json

    import ray
    import torch

    from components.engine import evaluate
    from components.model import build_model
    from components.tasks import model_task
    from pipelines.infer.evaluate import evaluation_pass
    from pipelines.run.progress import Progress
    from tests.conftest import TINY_VIT

    cfg = _cfg(f"model.backbone={json.dumps(TINY_VIT)}", "model.head.num_outputs=3", "data.eval_batch_size=2")
    model = build_model(cfg.model, 3).eval()
    g = np.random.default_rng(0)
    rows = [{"video": g.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8), "target": i % 3, "ok": True}
            for i in range(5)]
    lines: list[str] = []
    progress = Progress("evaluate", 3, every_steps=1, every_seconds=0, out=lines.append)
    r = evaluation_pass(model, ray.data.from_items(rows), cfg, torch.device("cpu"), progress=progress)
    assert len(lines) == 3 and "evaluate | 3/3" in lines[-1] and "clips/s" in lines[0] and "ETA" in lines[0]
    batches = [{"video": torch.from_numpy(np.stack([x["video"] for x in rows[i:i + 2]])),
                "target": torch.tensor([x["target"] for x in rows[i:i + 2]])} for i in range(0, 5, 2)]
    expected = evaluate(model, batches, model_task(cfg.model))
    assert r["clips"] == 5 and r["metrics"] == pytest.approx(expected.metrics)
