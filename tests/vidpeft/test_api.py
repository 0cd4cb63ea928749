"""The Python API (vidpeft/): train, load, predict and evaluate as the package docstring shows them;
and the wheel: installed into a fresh venv, it finds its shipped configs, spaces and campaigns by name
from any directory, lists them and explains a preset there (`vidpeft list`, `vidpeft explain --preset`),
and trains the demo config there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_train_load_predict_evaluate_from_python(ray_session, synth_data, tmp_path):
    import vidpeft
    from components.data.manifest import read_manifest

    result = vidpeft.train("demo", [f"data.manifest={synth_data}", f"output_dir={tmp_path / 'run'}",
                                    f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db", "optim.epochs=2"])
    assert result["output_dir"] == str(tmp_path / "run") and "val_top1" in result

    model = vidpeft.load(result["output_dir"])
    assert model.classes == read_manifest(synth_data).class_names and "timm_vit" in repr(model)
    val = read_manifest(synth_data).split("val")
    videos = [str(Path(synth_data).parent / p) if not Path(p).is_absolute() else p
              for p in val["video_path"].to_pylist()[:3]]
    rows = model.predict(videos + [str(tmp_path / "missing.mp4")], top_k=2)
    assert [len(r["top_k_labels"]) for r in rows[:3]] == [2, 2, 2]
    assert all(r["label"] in model.classes and 0 <= r["score"] <= 1 for r in rows[:3])
    assert rows[3]["label"] is None and "missing.mp4" in rows[3]["error"]  # a bad file is a row, not a crash

    ev = model.evaluate(split="val")  # the run's own manifest
    assert ev["clips"] == val.num_rows and 0 <= ev["metrics"]["top1"] <= 1
    assert ev["metrics"]["top1"] == pytest.approx(result["val_top1"], abs=1e-6)  # the same model, same views


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """A fresh venv holding the built wheel; its dependencies come from the test's own environment
    (a .pth line), so nothing is downloaded, and the checkout is not on its path."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy: setuptools leaves build/ beside the sources it builds
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", "build", "*.egg-info", "__pycache__", "mlruns", "mlartifacts", "demo_data"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp / "dist"), str(src)], check=True, cwd=tmp, capture_output=True)
    wheel = next((tmp / "dist").glob("vidpeft-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True)
    py = tmp / "venv" / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "deps.pth").write_text("\n".join(deps) + "\n")  # appended after the venv's own site-packages
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return py, site, env


def test_the_wheel_finds_its_shipped_files_by_name_from_any_directory(wheel_env, tmp_path):
    py, site, env = wheel_env
    script = textwrap.dedent("""
        import pipelines, vidpeft
        from pipelines.shipped import find, names
        from pipelines.search.campaign import load_campaign
        from pipelines.search.space import load_space
        print(pipelines.__file__)
        for kind in ("config", "space", "campaign"):
            for n in names(kind):
                find(kind, n)
        load_space(find("space", "demo_adapters"))
        load_campaign(find("campaign", "cm3t_table5"))
        # a checkout path written in the README resolves inside the package too
        print(find("config", "pipelines/configs/demo/target.yaml"))
        print(len(names("config")), len(names("space")), len(names("campaign")))
    """)
    r = subprocess.run([str(py), "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    first, target, counts = r.stdout.split("\n")[:3]
    assert first.startswith(str(site)) and target.startswith(str(site))  # the installed copy, not the checkout
    assert all(int(n) > 0 for n in counts.split())
    listed = subprocess.run([str(py), "-m", "pipelines.cli", "list", "campaigns"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert listed.returncode == 0 and "cm3t_table5" in listed.stdout


def test_the_installed_cli_lists_and_explains_shipped_presets_from_an_empty_directory(wheel_env, tmp_path):
    py, site, env = wheel_env

    def cli(*args):
        return subprocess.run([str(py), "-m", "pipelines.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True)

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    kinds = dict(line.split(": ", 1) for line in listed.stdout.splitlines())
    assert {"cm3t/mhva_pt", "demo"} <= set(kinds["configs"].split())
    assert "demo_adapters" in kinds["spaces"].split() and "cm3t_table5" in kinds["campaigns"].split()
    # by name, and by the checkout path the README writes: both the installed copy's file
    for ref in ("cm3t/mhva_pt", "pipelines/configs/presets/cm3t/mhva_pt.yaml"):
        r = cli("explain", "--preset", ref)
        assert r.returncode == 0, r.stderr[-2000:]
        first, *rows = r.stdout.splitlines()
        assert first.startswith(str(site / "pipelines" / "configs" / "presets" / "cm3t" / "mhva_pt.yaml"))
        epochs = next(x for x in rows if x.startswith("optim.epochs"))
        assert "14" in epochs and "paper Tables 1/4" in epochs
    bad = cli("explain", "--preset", "cm3t/nope")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "--preset cm3t/nope: no such preset file" in bad.stderr.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran


@pytest.mark.e2e
def test_the_wheel_trains_the_demo_config_from_an_empty_directory(wheel_env, synth_data, tmp_path):
    py, site, env = wheel_env
    r = subprocess.run([str(py), "-m", "pipelines.cli", "train", "--config", "demo", "-q",
                        "--set", f"data.manifest={synth_data}", "--set", "optim.epochs=1",
                        "--set", f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = list((tmp_path / "runs").glob("*/metrics.json"))
    assert len(runs) == 1  # relative outputs land in the working directory
