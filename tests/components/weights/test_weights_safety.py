"""Weights files that carry code are never run; files of the wrong size fail with a message that
says what fits; `vidpeft weights inspect` reports the same without starting Ray."""

from __future__ import annotations

import json
import os
import pickle
import random
import warnings
import subprocess
import sys
import zipfile
from pathlib import Path

import open_clip
import pytest
import timm
import torch
import torchvision

from components.weights.reader import WeightsError, read_weights_file
from components.weights.strict import capture_notes
from tests.components.weights.test_weights_formats import CLIP, SWIN, VIT, build, tiny_swin_state, tiny_vit_state, to_release_layout

ROOT = Path(__file__).resolve().parents[3]


class MakesMarker:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_torch_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": MakesMarker(marker)}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match=r"evil\.pth: refused: the pickle refers to io\.open, which could run code"):
        read_weights_file(tmp_path / "evil.pth")
    assert not marker.exists()


def test_torchscript_archive_with_code_is_refused_and_never_compiled(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    good = tmp_path / "good.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(good))
    evil = tmp_path / "ViT-B-16.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():  # same archive, data.pkl replaced by a pickle that runs code
            data = src.read(item)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps({"weight": MakesMarker(marker)}, protocol=2)
            dst.writestr(item, data)

    def no_jit(*args, **kwargs):
        raise AssertionError("torch.jit.load would compile and run the archive's code")

    monkeypatch.setattr(torch.jit, "load", no_jit)
    assert set(read_weights_file(good).tensors) == {"weight", "bias"}  # read without torch.jit.load
    with pytest.raises(WeightsError, match=r"ViT-B-16\.pt: refused TorchScript archive: refused global io\.open"):
        read_weights_file(evil)
    assert not marker.exists()


class RunsShell:
    """Unpickling this calls ``os.system(f"touch {marker}")``: the payload of the user's report."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


SYSTEM = f"{os.system.__module__}.system"  # posix.system: the name the pickle stores


def code_pickles(tmp_path: Path, marker: Path) -> dict[str, Path]:
    """Every non-zip pickle container a user may hand over, each running code when unpickled."""
    out = {"legacy.pth": tmp_path / "legacy.pth"}
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": RunsShell(marker)}, out["legacy.pth"],
               _use_new_zipfile_serialization=False)
    for protocol in (0, 2, 4, 5):  # GLOBAL (text and binary) and STACK_GLOBAL with memoised names
        out[f"plain{protocol}.pkl"] = tmp_path / f"plain{protocol}.pkl"
        out[f"plain{protocol}.pkl"].write_bytes(pickle.dumps([RunsShell(marker), RunsShell(marker)], protocol=protocol))
    return out


def test_legacy_and_plain_pickles_with_code_are_refused_by_name(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    real_load = torch.load

    def checked_load(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "torch.load without weights_only=True"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", checked_load)
    for name, path in code_pickles(tmp_path, marker).items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torch's "Detected pickle protocol 4" UserWarning included
            with pytest.raises(WeightsError) as err:
                read_weights_file(path)
        msg = str(err.value)
        assert msg == (f"model.backbone.checkpoint: {path}: refused: the pickle refers to {SYSTEM}, which could run "
                       "code when loaded; only tensors and plain data are read"), (name, msg)
    assert not marker.exists()


def test_legacy_and_plain_pickles_of_data_still_load(tmp_path):
    import argparse

    import numpy as np

    state = {"meta": {"epoch": np.int64(3), "mean": np.zeros(2), "dtype": np.dtype("float32")},
             "args": argparse.Namespace(lr=0.1), "state_dict": {"backbone.w": torch.ones(2, dtype=torch.bfloat16)}}
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    wf = read_weights_file(tmp_path / "legacy.pth")
    assert wf.format == "torch" and set(wf.tensors) == {"w"} and wf.tensors["w"].dtype == torch.bfloat16


def not_weights_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the error after "<key>: <file>: ")."""
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(64, 64)}, str(tmp_path / "good.safetensors"))
    torch.save({"w": torch.zeros(64, 64)}, tmp_path / "good.pth")
    files = {"garbage.bin": random.Random(0).randbytes(4096), "empty.pth": b"",
             "truncated.safetensors": (tmp_path / "good.safetensors").read_bytes()[:500],
             "truncated.pth": (tmp_path / "good.pth").read_bytes()[:2000]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    no = "not a readable weights file (safetensors, torch zip or pickle): "
    return {"garbage.bin": (tmp_path / "garbage.bin", no + "its bytes are none of these"),
            "empty.pth": (tmp_path / "empty.pth", no + "the file is empty"),
            "truncated.safetensors": (tmp_path / "truncated.safetensors", "unreadable safetensors file ("),
            "truncated.pth": (tmp_path / "truncated.pth", no + "a truncated or damaged zip archive")}


def test_files_that_are_no_weights_are_one_line_naming_the_file(tmp_path):
    for name, (path, says) in not_weights_files(tmp_path).items():
        with pytest.raises(WeightsError) as err:
            read_weights_file(path)
        msg = str(err.value)
        assert msg.startswith(f"model.backbone.checkpoint: {path}: {says}"), (name, msg)
        assert "\n" not in msg and "weights_only" not in msg and "refused" not in msg, (name, msg)


def test_not_a_weights_file(tmp_path):
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(WeightsError, match=r"model\.backbone\.checkpoint: .*notes\.pth: not a readable weights file"):
        read_weights_file(tmp_path / "notes.pth")
    with pytest.raises(WeightsError, match="weights file not found"):
        read_weights_file(tmp_path / "missing.pth")


def shapes_only(model: torch.nn.Module) -> dict:
    """A published-size state dict whose values are one stored number each (shapes are what matter)."""
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in model.state_dict().items()}


def test_swin3d_s_weights_with_swin3d_t_config_say_which_size(tmp_path):
    with torch.device("meta"):
        small = torchvision.models.video.swin3d_s()
    torch.save(shapes_only(small), tmp_path / "swin3d_s-da41c237.pth")
    with pytest.raises(WeightsError) as err:
        build({"family": "video_swin", "name": "swin3d_t"}, tmp_path / "swin3d_s-da41c237.pth")
    msg = str(err.value)
    assert "swin3d_s-da41c237.pth: does not fit video_swin swin3d_t: 0 missing, 168 unexpected (features.4.6." in msg
    assert "these weights look like swin3d_s" in msg and "\n" not in msg


def test_timm_wrong_size_says_which_size(tmp_path):
    with torch.device("meta"):
        small = timm.create_model("vit_small_patch16_224", num_classes=0)
    torch.save(shapes_only(small), tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsError, match=r"does not fit timm_vit vit_tiny_patch16_224: .*mismatched.*"
                                           r"look like vit_small_patch16_224"):
        build({"family": "timm_vit", "name": "vit_tiny_patch16_224", "img_size": 224}, tmp_path / "pytorch_model.bin")


def test_open_clip_wrong_size_says_which_size(tmp_path):
    cfg = json.loads((ROOT / "components/backbones/openclip_configs/vidpeft-tiny-clip.json").read_text())
    cfg["vision_cfg"]["layers"] = 3
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs/vidpeft-test-deeper.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "cfgs")
    torch.save(open_clip.create_model("vidpeft-test-deeper").state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    with pytest.raises(WeightsError, match=r"does not fit openclip_vit vidpeft-tiny-clip: 0 missing, \d+ unexpected "
                                           r"\(transformer\.resblocks\.2\..*look like vidpeft-test-deeper"):
        build(CLIP, tmp_path / "open_clip_pytorch_model.bin")


def test_strict_loading_unexpected_missing_mismatched(tmp_path):
    state = tiny_vit_state()
    extra = {**state, "blocks.0.attn.extra_scale": torch.ones(1)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"0 missing, 1 unexpected \(blocks\.0\.attn\.extra_scale\), 0 mismatched"):
        build(VIT, tmp_path / "extra.pth")
    torch.save({k: v for k, v in state.items() if k != "norm.bias"}, tmp_path / "short.pth")
    with pytest.raises(WeightsError, match=r"1 missing \(norm\.bias\), 0 unexpected"):
        build(VIT, tmp_path / "short.pth")
    torch.save(tiny_swin_state(), tmp_path / "swin.pth")  # a patch size torchvision cannot resample: key named
    with pytest.raises(WeightsError, match=r"1 mismatched \(patch_embed\.proj\.weight file \(16, 3, 2, 4, 4\) vs "
                                           r"model \(16, 3, 2, 2, 2\)\)"):
        build(SWIN, tmp_path / "swin.pth", kwargs={**SWIN["kwargs"], "patch_size": [2, 2, 2]})


def test_timm_patch_size_change_is_resampled_and_said(tmp_path):
    torch.save(tiny_vit_state(), tmp_path / "vit.pth")  # timm resamples patch kernels (FlexiViT) and positions
    with capture_notes() as notes:
        model = build(VIT, tmp_path / "vit.pth", kwargs={**VIT["kwargs"], "patch_size": 4})
    assert model.vit.patch_embed.proj.weight.shape == (32, 3, 4, 4)
    assert "resampled patch_embed.proj.weight from 8x8 to 4x4" in " | ".join(notes)


# `vidpeft weights inspect` as the CLI runs it, several times in one process (one torch import, not one per
# file): each call's own stdout and stderr at the file-descriptor level (a C++ warning too), every Python
# warning shown on every call rather than once per process, an uncaught exception printed as Python would
_INSPECT_EACH = r"""
import json, os, sys, tempfile, traceback, warnings
from pipelines.cli import main
warnings.simplefilter("always")
results = []
for argv in json.loads(sys.argv[1]):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush(); sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        try:
            rc = main(["weights", "inspect", *argv]) or 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            rc = 1
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved[0], 1); os.dup2(saved[1], 2)
            os.close(saved[0]); os.close(saved[1])
        out.seek(0); err.seek(0)
        results.append([rc, out.read().decode(), err.read().decode()])
assert "ray" not in sys.modules, "inspect imported ray"
print(json.dumps(results))
"""


def inspect_each(*argvs: list[str]) -> list[subprocess.CompletedProcess]:
    """``vidpeft weights inspect ARGV`` for each ARGV, in one fresh process: (returncode, stdout, stderr) each."""
    proc = subprocess.run([sys.executable, "-c", _INSPECT_EACH, json.dumps([list(a) for a in argvs])],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr[-3000:]
    return [subprocess.CompletedProcess(["vidpeft", "weights", "inspect", *a], rc, out, err)
            for a, (rc, out, err) in zip(argvs, json.loads(proc.stdout))]


def test_weights_inspect_cli(tmp_path):
    state = tiny_swin_state()
    torch.save({"meta": {}, "state_dict": to_release_layout(state, mmaction=True)}, tmp_path / "mm.pth")
    kwargs = json.dumps(SWIN["kwargs"])
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 64)
    ok, bad, junk = inspect_each(
        [str(tmp_path / "mm.pth"), "--family", "video_swin", "--name", "swin3d_t", "--kwargs", kwargs],
        [str(tmp_path / "mm.pth"), "--family", "video_swin", "--name", "swin3d_t",
         "--kwargs", json.dumps({**SWIN["kwargs"], "depths": [2, 2]})],
        [str(tmp_path / "junk.pth")])
    assert ok.returncode == 0, ok.stderr
    assert "format:     torch; wrapper: state_dict, prefix backbone.; 51 tensors" in ok.stdout
    assert "layout:     Video Swin Transformer release / MMAction2" in ok.stdout
    assert "loads:      yes into video_swin swin3d_t" in ok.stdout
    assert "converted Video Swin release / MMAction2 names" in ok.stdout

    assert bad.returncode == 1
    assert "loads:      NO into video_swin swin3d_t" in bad.stdout and "14 missing" in bad.stdout

    assert junk.returncode == 2 and "not a readable weights file" in junk.stderr and not junk.stdout


def test_weights_inspect_says_what_the_reader_says(tmp_path):
    """inspect and train print the reader's one line; code pickles are refused by name, silently."""
    marker = tmp_path / "PWNED"
    bad = {**{n: (p, f"refused: the pickle refers to {SYSTEM}") for n, p in code_pickles(tmp_path, marker).items()},
           **not_weights_files(tmp_path)}
    runs = inspect_each(*[[str(path)] for path, _ in bad.values()])
    for (name, (path, says)), run in zip(bad.items(), runs):
        with pytest.raises(WeightsError) as err:
            read_weights_file(path, key_hint="weights inspect")
        assert run.returncode == 2, (name, run.stdout, run.stderr)
        assert run.stderr == f"vidpeft: error: {err.value}\n" and says in run.stderr and not run.stdout, (name, run.stdout, run.stderr)
        # the one line is all of stderr: no torch warning (each call shows its own), no traceback
    assert not marker.exists()
