"""The bad-input corpus over every verb: each case has an expected class, checked, and a table of cases per
class is printed (`pytest -s` shows it).

- error:   exit code 2 and one line `vidpeft: error: ...` naming the file, row, key or option (argparse's own
           two-line usage error counts for a malformed command line); no traceback.
- handled: the command did the right thing (its check says what that is).
- refused: exit code 2, one line naming the output that would have replaced data, and every protected file
           byte-for-byte unchanged (`--overwrite` never makes an input an output).
Every case runs through `pipelines.cli.main` with Ray barred (all of them are checkable on the driver);
tests/pipelines/cli/test_bad_inputs.py holds the larger per-verb families (CSVs, weights files, configs).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from pipelines.cli import main
from tests.conftest import TINY_VIT, own_lines

ERROR, HANDLED, REFUSED = "error", "handled", "refused"


@dataclass
class Case:
    verb: str
    name: str
    kind: str
    args: Callable[[dict], list]  # ctx -> argv
    names: str | Callable[[dict], str] = ""  # what the error line must contain
    protect: Callable[[dict], list] = lambda ctx: []  # files that must not change
    check: Callable[[dict, int, str, str], None] | None = None  # handled: (ctx, rc, out, err) -> asserts
    env: dict = field(default_factory=dict)


def fake_run(root: Path, manifest: Path, *, weights_bytes: bytes | None = None, kwargs: dict | None = None) -> Path:
    """A run directory as `vidpeft train` leaves it (config.yaml, labels.json, run_info.json, trainable weights
    of an untrained adapter model); optionally with foreign weights bytes or an extra backbone kwarg."""
    import yaml

    from components.checkpoint import save_weights, trainable_state_dict
    from components.config import dump_yaml, from_dict, to_dict
    from components.model import build_model
    from pipelines.config import ExperimentConfig
    from pipelines.infer.trained import write_labels

    backbone = {**TINY_VIT, "kwargs": {**TINY_VIT["kwargs"]}}
    cfg = from_dict(ExperimentConfig, {"name": "corpus", "output_dir": str(root), "seed": 0,
                                       "data": {"manifest": str(manifest)}, "tracking": {"enabled": False},
                                       "model": {"backbone": backbone, "adapters": [{"type": "bottleneck"}],
                                                 "head": {"num_outputs": 4}}})
    root.mkdir(parents=True)
    text = dump_yaml(cfg)
    if kwargs:  # a handed-over config.yaml that asks for more than the schema check sees
        data = yaml.safe_load(text)
        data["model"]["backbone"]["kwargs"].update(kwargs)
        text = yaml.safe_dump(data)
    (root / "config.yaml").write_text(text)
    write_labels(root, [f"class_{i}" for i in range(4)], None)
    (root / "run_info.json").write_text(json.dumps({"run_id": None, "tracking_uri": None, "output_dir": str(root)}))
    if weights_bytes is not None:
        (root / "weights.safetensors").write_bytes(weights_bytes)
    else:
        model = build_model(cfg.model, 4, None)
        save_weights(root / "weights.safetensors", trainable_state_dict(model), to_dict(cfg.model))
    return root


def labels_csv(path: Path, labels: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["video_path", "label"], *[[f"{i}.mp4", v] for i, v in enumerate(labels)]])
    return path


@pytest.fixture
def ctx(tmp_path, synth_data, monkeypatch):
    import pipelines.infer.zeroshot
    import pipelines.run.train
    import pipelines.runtime.ray_env

    def started(*_a, **_k):
        raise AssertionError("Ray was started for an input the driver could have checked")

    for module in (pipelines.run.train, pipelines.infer.zeroshot, pipelines.runtime.ray_env):
        monkeypatch.setattr(module, "ensure_ray", started)
    vids = tmp_path / "v"
    vids.mkdir()
    for i in range(6):
        (vids / f"{i}.mp4").write_bytes(b"prepare does not decode")
    manifest = tmp_path / "m.parquet"
    shutil.copy(synth_data, manifest)
    shutil.copytree(Path(synth_data).parent / "videos", tmp_path / "videos")  # relative paths stay valid
    existing = tmp_path / "existing.parquet"
    shutil.copy(synth_data, existing)
    (tmp_path / "existing.safetensors").write_bytes(b"a user's file")
    synth_dir = tmp_path / "synth"
    synth_dir.mkdir()
    (synth_dir / "manifest.parquet").write_bytes(b"a user's manifest")
    c = {"tmp": tmp_path, "videos": vids, "manifest": manifest, "existing": existing, "monkeypatch": monkeypatch,
         "csv01": labels_csv(tmp_path / "labels01.csv", ["0", "1", "0", "1", "1.5", "0"]),
         "csv": labels_csv(tmp_path / "train.csv", ["a", "b", "a", "b", "a", "b"]),
         "existing_st": tmp_path / "existing.safetensors", "synth_dir": synth_dir,
         "run": fake_run(tmp_path / "run", manifest),
         "bad_weights": fake_run(tmp_path / "bad_weights", manifest, weights_bytes=b"\xff" * 64),
         "refused_kwarg": fake_run(tmp_path / "refused_kwarg", manifest, kwargs={"pretrained": True})}
    (tmp_path / "space_metric.yaml").write_text("metric: no_such_metric\nparams:\n  optim.lr: {type: choice, values: [0.1]}\n")
    (tmp_path / "space_kwarg.yaml").write_text(
        "params:\n  model.backbone.kwargs.pretrained: {type: choice, values: [false, true]}\n")
    return c


def train_base(c) -> list:
    tiny = "{" + ", ".join(f"{k}: {v}" for k, v in TINY_VIT.items() if k != "kwargs") + \
           ", kwargs: {patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}}"
    return ["--set", f"model.backbone={tiny}", "--set", f"data.manifest={c['manifest']}",
            "--set", f"output_dir={c['tmp'] / 'out'}", "--set", "tracking.enabled=false"]


def prepare(c, ann, out, *extra) -> list:
    return ["prepare", "csv", "--annotations", f"train={ann}", "--videos", c["videos"], "--out", out, *extra]


def said(text: str) -> Callable:
    def check(c, rc, out, err):
        assert rc == 0, err
        assert text in out + err, out + err
    return check


def manifest_rows(n: int) -> Callable:
    def check(c, rc, out, err):
        from components.data.manifest import read_manifest

        assert rc == 0, err
        assert read_manifest(c["existing"], check_files=False).table.num_rows == n
    return check


CASES = [
    # prepare
    Case("prepare", "out is the input CSV", REFUSED, lambda c: prepare(c, c["csv"], c["csv"]), "is this command's input",
         lambda c: [c["csv"]]),
    Case("prepare", "out is the input CSV, --overwrite", REFUSED,
         lambda c: prepare(c, c["csv"], c["csv"], "--overwrite"), "is this command's input", lambda c: [c["csv"]]),
    Case("prepare", "out is an existing manifest", REFUSED, lambda c: prepare(c, c["csv"], c["existing"]),
         "--overwrite", lambda c: [c["existing"]]),
    Case("prepare", "out is an existing manifest, --overwrite", HANDLED,
         lambda c: prepare(c, c["csv"], c["existing"], "--overwrite"), check=manifest_rows(6)),
    Case("prepare", "labels 0/1 with a typo 1.5", ERROR, lambda c: prepare(c, c["csv01"], c["tmp"] / "new.parquet"),
         "'1.5'"),
    Case("prepare", "labels 0/1/1.5 read as names on request", HANDLED,
         lambda c: prepare(c, c["csv01"], c["tmp"] / "new.parquet", "--set", "label_type=name"), check=said("3 classes")),
    # check-videos
    Case("check-videos", "--clean is the manifest", REFUSED,
         lambda c: ["check-videos", c["manifest"], "--clean", c["manifest"], "--quick"], "is this command's input",
         lambda c: [c["manifest"]]),
    Case("check-videos", "--clean is the manifest, --overwrite", REFUSED,
         lambda c: ["check-videos", c["manifest"], "--clean", c["manifest"], "--overwrite"], "is this command's input",
         lambda c: [c["manifest"]]),
    Case("check-videos", "--clean onto an existing manifest", REFUSED,
         lambda c: ["check-videos", c["manifest"], "--clean", c["existing"]], "--overwrite", lambda c: [c["existing"]]),
    Case("check-videos", "--report is the manifest", REFUSED,
         lambda c: ["check-videos", c["manifest"], "--report", c["manifest"]], "is this command's input",
         lambda c: [c["manifest"]]),
    Case("check-videos", "--workers -3", ERROR, lambda c: ["check-videos", c["manifest"], "--workers", "-3"], "--workers"),
    # export
    Case("export", "--backbone-only onto an existing file", REFUSED,
         lambda c: ["export", c["run"], "--backbone-only", "--out", c["existing_st"]], "--overwrite",
         lambda c: [c["existing_st"]]),
    Case("export", "--backbone-only onto the run's own weights, --overwrite", REFUSED,
         lambda c: ["export", c["run"], "--backbone-only", "--out", c["run"] / "weights.safetensors", "--overwrite"],
         "is this command's input", lambda c: [c["run"] / "weights.safetensors"]),
    Case("export", "--backbone-only of an adapters run", HANDLED,
         lambda c: ["export", c["run"], "--backbone-only", "--out", c["tmp"] / "bb.safetensors"],
         check=said("without the run's adapters and head")),
    Case("export", "weights file is not safetensors", ERROR,
         lambda c: ["export", c["bad_weights"], "--out", c["tmp"] / "exp", "--no-mlflow"],
         lambda c: str(c["bad_weights"] / "weights.safetensors")),
    # evaluate
    Case("evaluate", "--split bogus", ERROR, lambda c: ["evaluate", c["run"], "--split", "bogus"], "--split 'bogus'"),
    Case("evaluate", "weights file is not safetensors", ERROR, lambda c: ["evaluate", c["bad_weights"]],
         lambda c: str(c["bad_weights"] / "weights.safetensors")),
    Case("evaluate", "config.yaml sets a refused kwarg", ERROR, lambda c: ["evaluate", c["refused_kwarg"]],
         "model.backbone.kwargs.pretrained"),
    # predict
    Case("predict", "weights file is not safetensors", ERROR,
         lambda c: ["predict", c["bad_weights"], c["manifest"], "--out", c["tmp"] / "p.parquet"],
         lambda c: str(c["bad_weights"] / "weights.safetensors")),
    Case("predict", "config.yaml sets a refused kwarg", ERROR,
         lambda c: ["predict", c["refused_kwarg"], c["manifest"], "--out", c["tmp"] / "p.parquet"],
         "model.backbone.kwargs.pretrained"),
    Case("predict", "--out is the input manifest", REFUSED,
         lambda c: ["predict", c["run"], c["manifest"], "--out", c["manifest"]], "is this command's input",
         lambda c: [c["manifest"]]),
    Case("predict", "--split bogus", ERROR,
         lambda c: ["predict", c["run"], c["manifest"], "--split", "bogus", "--out", c["tmp"] / "p.parquet"], "--split"),
    # tune
    Case("tune", "space metric no_such_metric", ERROR,
         lambda c: ["tune", *train_base(c), "--space", c["tmp"] / "space_metric.yaml", "--trials", "1"],
         "'no_such_metric'"),
    Case("tune", "space sets a refused kwarg", ERROR,
         lambda c: ["tune", *train_base(c), "--space", c["tmp"] / "space_kwarg.yaml", "--trials", "1"],
         "model.backbone.kwargs.pretrained"),
    # train
    Case("train", "unknown config key", ERROR, lambda c: ["train", *train_base(c), "--set", "optim.lr_typo=1"],
         "optim.lr_typo"),
    Case("train", "scaling.max_failures=-2", ERROR,
         lambda c: ["train", *train_base(c), "--set", "scaling.max_failures=-2"], "max_failures"),
    # synth, standins, submit, report, ablate, weights, zeroshot, zeroshot-splits, explain, demo
    Case("synth", "into a folder holding a manifest", REFUSED, lambda c: ["synth", c["synth_dir"], "--clips-per-class", "1"],
         "--overwrite", lambda c: [c["synth_dir"] / "manifest.parquet"]),
    Case("synth", "--task bogus", ERROR, lambda c: ["synth", c["tmp"] / "s", "--task", "bogus"], "--task"),
    Case("standins", "--out is a file", ERROR, lambda c: ["standins", "--out", c["csv"]], lambda c: str(c["csv"]),
         lambda c: [c["csv"]]),
    Case("submit", "--runtime-env missing", ERROR,
         lambda c: ["submit", "--dry-run", "--working-dir", c["tmp"], "--runtime-env", c["tmp"] / "nope.yaml", "--",
                    "vidpeft", "explain"], "nope.yaml"),
    Case("submit", "checkpoint storage inside the working dir", HANDLED,
         lambda c: ["submit", "--dry-run", "--working-dir", c["tmp"], "--", "vidpeft", "explain"],
         check=said('"ckpts/"'), env={"VIDPEFT_STORAGE_PATH": "TMP/ckpts"}),
    Case("report", "campaign file missing", ERROR, lambda c: ["report", c["tmp"] / "nope.yaml", "--tracking-uri",
                                                              f"sqlite:///{c['tmp']}/r.db"], "nope"),
    Case("ablate", "campaign file missing", ERROR, lambda c: ["ablate", "--campaign", c["tmp"] / "nope.yaml"], "nope.yaml"),
    Case("weights", "file missing", ERROR, lambda c: ["weights", "inspect", c["tmp"] / "nope.safetensors"],
         "nope.safetensors"),
    Case("zeroshot", "a classifier run (no text tower)", ERROR,
         lambda c: ["zeroshot", "--checkpoint", c["run"], "--classes", c["tmp"] / "nope.txt", "--manifest",
                    c["manifest"]], "model.kind"),
    Case("zeroshot-splits", "neither a run nor a config", ERROR,
         lambda c: ["zeroshot-splits", "--manifest", c["tmp"] / "nope.parquet"], "--checkpoint"),
    Case("explain", "lists the keys", HANDLED, lambda c: ["explain"], check=said("scaling.max_failures")),
    Case("pack", "--out already holds a manifest.parquet", REFUSED, lambda c: ["pack", c["manifest"], "--out",
         c["synth_dir"]], "--overwrite", lambda c: [c["synth_dir"] / "manifest.parquet", c["manifest"]]),
    Case("pack", "--shard-size bogus", ERROR, lambda c: ["pack", c["manifest"], "--out", c["tmp"] / "p",
         "--shard-size", "lots"], "--shard-size"),
    Case("serve", "no such run", ERROR, lambda c: ["serve", c["tmp"] / "nope"], lambda c: str(c["tmp"] / "nope")),
    Case("list", "an unknown kind", ERROR, lambda c: ["list", "bogus"], "invalid choice"),
    Case("list", "the shipped names", HANDLED, lambda c: ["list"], check=said("cm3t_table5")),
    Case("ray", "an unknown action", ERROR, lambda c: ["ray", "bogus"], "invalid choice"),
    Case("demo", "unknown --set key", ERROR, lambda c: ["demo", "--workdir", c["tmp"] / "d", "--set", "nope.key=1"],
         "nope"),
]


def run_case(case: Case, c: dict, capsys) -> tuple[int, str, str]:
    for k, v in case.env.items():
        c["monkeypatch"].setenv(k, v.replace("TMP", str(c["tmp"])))
    try:
        rc = main([str(a) for a in case.args(c)])
    except SystemExit as e:  # argparse: usage + one error line, exit 2
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, own_lines(out.err)


def test_input_corpus(ctx, capsys):
    classes, problems = Counter(), []
    for case in CASES:
        before = {p: Path(p).read_bytes() for p in case.protect(ctx)}
        rc, out, err = run_case(case, ctx, capsys)
        label = f"{case.verb}: {case.name}"
        try:
            assert "Traceback" not in out + err, "traceback"
            for p, data in before.items():
                assert Path(p).read_bytes() == data, f"{p} changed"
            if case.kind == HANDLED:
                case.check(ctx, rc, out, err)
            else:
                names = case.names(ctx) if callable(case.names) else case.names
                lines = [ln for ln in err.strip().splitlines() if ln.strip()]
                assert rc == 2, f"rc {rc}: {err.strip()[-300:]}"
                assert lines and "error:" in lines[-1], err
                if not lines[-1].startswith("vidpeft: error: "):  # argparse: its usage, then one error line
                    assert lines[0].startswith("usage:") and all(ln.startswith(" ") for ln in lines[1:-1]), err
                    assert lines[-1].startswith(f"vidpeft {case.verb}: error: "), err
                else:
                    assert len(lines) == 1, err
                assert names in lines[-1], (names, lines[-1])
                if case.kind == REFUSED:
                    assert "--overwrite" in lines[-1] or "input" in lines[-1], lines[-1]
            classes[case.kind] += 1
        except AssertionError as e:
            problems.append(f"{label}: {e}")
    verbs = sorted({c.verb for c in CASES})
    print(f"\ninput corpus: {len(CASES)} cases over {len(verbs)} verbs")
    print(f"{'class':<10} cases")
    for kind in (ERROR, HANDLED, REFUSED):
        print(f"{kind:<10} {classes[kind]}")
    print(f"{'failed':<10} {len(problems)}  (tracebacks, silent wrongs, overwrites or wrong class)")
    assert not problems, "\n".join(problems)
    assert classes == Counter(c.kind for c in CASES)


def test_every_verb_is_in_the_corpus():
    from pipelines.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) <= {c.verb for c in CASES}, set(sub.choices) - {c.verb for c in CASES}
