"""Weights that do not fit end in one line saying what to set, never a traceback (issue #30); OpenAI
CLIP weights in a GELU model are named as QuickGELU weights. Files are built from random-init models."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torchvision.models.video.swin_transformer import SwinTransformer3d

from components.backbones.openclip_weights import guess_open_clip
from components.weights.identify import looks_like
from components.weights.reader import WeightsError
from components.weights.strict import capture_notes
from components.weights.swin_tables import relative_position_index
from tests.components.weights.test_weights_formats import CLIP, TIMM_CLIP, VIT, build, tiny_open_clip, tiny_swin_state, tiny_vit_state
from components.weights.openai_clip import quick_gelu_name
from pipelines.cli import main
from tests.components.weights.test_weights_safety import shapes_only


class Run:
    def __init__(self, returncode: int, out: str) -> None:
        self.returncode, self.stdout = returncode, out


@pytest.fixture
def inspect(capsys):
    """`vidpeft weights inspect ARGS` in this process: an exception escaping it fails the test."""

    def run(*args: str) -> Run:
        capsys.readouterr()
        rc = main(["weights", "inspect", *args])
        out = capsys.readouterr()
        return Run(rc, out.out + out.err)

    return run


def one_line(run: Run) -> str:
    assert "Traceback" not in run.stdout
    return run.stdout


def test_file_of_another_family_names_the_family(tmp_path, inspect):
    torch.save(tiny_swin_state(), tmp_path / "swin.pth")
    with pytest.raises(WeightsError, match=r"swin\.pth: a torchvision swin3d state dict file, which the timm_vit "
                                           r"family does not load: set model\.backbone\.family: video_swin$"):
        build(VIT, tmp_path / "swin.pth")  # was: AssertionError: Input tensor should be 4D
    torch.save(tiny_vit_state(), tmp_path / "vit.pth")
    for family in ("video_swin", "videomae"):  # videomae said "a pre-training encoder" for any ViT file
        with pytest.raises(WeightsError, match=rf"which the {family} family does not load: set "
                                               r"model\.backbone\.family: timm_vit"):
            build({"family": family, "name": "swin3d_t" if family == "video_swin" else "videomae_small"},
                  tmp_path / "vit.pth")
    run = inspect(str(tmp_path / "swin.pth"), "--family", "timm_vit", "--name", "vit_tiny_patch16_224")
    assert run.returncode == 1 and "set model.backbone.family: video_swin" in one_line(run)


def test_inspect_bad_kwargs_and_family_are_one_line(tmp_path, inspect):
    torch.save(tiny_vit_state(), tmp_path / "vit.pth")
    vit = [str(tmp_path / "vit.pth"), "--family", "timm_vit", "--name", "vit_tiny_patch16_224"]
    run = inspect(*vit, "--kwargs", "{patch_size:8}")  # was: JSONDecodeError
    assert run.returncode == 2
    assert "vidpeft: error: model.backbone.kwargs.patch_size:8: malformed key" in one_line(run)
    run = inspect(*vit, "--kwargs", "{patch_size: ")
    assert run.returncode == 2 and "vidpeft: error: --kwargs: not a JSON / YAML mapping" in one_line(run)
    run = inspect(*vit, "--kwargs", '{"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}')
    assert run.returncode == 0 and "loads:      yes" in one_line(run)
    run = inspect(str(tmp_path / "vit.pth"), "--family", "nosuch", "--name", "x")
    assert run.returncode == 2 and "vidpeft: error: model.backbone.family: unknown family 'nosuch'" in one_line(run)


def test_open_clip_file_with_another_text_width_says_which_size(tmp_path):
    torch.save(tiny_open_clip().state_dict(), tmp_path / "open_clip_pytorch_model.bin")  # width 32
    with pytest.raises(WeightsError, match=r"does not fit openclip_vit vidpeft-tiny-clip12: .*mismatched .*"
                                           r"look like vidpeft-tiny-clip \(set"):
        build({**CLIP, "name": "vidpeft-tiny-clip12"}, tmp_path / "open_clip_pytorch_model.bin")  # was: AssertionError


def test_open_clip_guess_is_the_plain_model_not_coca():
    import open_clip

    state = shapes_only(open_clip.create_model("ViT-L-14", device="meta"))  # was: coca_ViT-L-14
    assert guess_open_clip(state) == "ViT-L-14"
    assert looks_like(state) == [("openclip_vit", "ViT-L-14")]


def test_mvit_files_are_called_unsupported(tmp_path, inspect):
    with torch.device("meta"):
        mvit = torchvision.models.video.mvit_v2_s()
    torch.save(shapes_only(mvit), tmp_path / "mvit_v2_s-ae3be167.pth")
    msg = r"MViT \(torchvision mvit_\*, MMAction2 / SlowFast MViT.*not supported: no vidpeft backbone family builds MViT"
    with pytest.raises(WeightsError, match=msg):
        build(VIT, tmp_path / "mvit_v2_s-ae3be167.pth")
    mm = {"backbone.patch_embed.projection.weight": torch.zeros(96, 3, 3, 7, 7),
          "backbone.blocks.0.attn.rel_pos_h": torch.zeros(15, 96), "backbone.blocks.0.attn.qkv.weight": torch.zeros(288, 96)}
    torch.save({"state_dict": mm}, tmp_path / "mvit_mmaction2.pth")
    run = inspect(str(tmp_path / "mvit_mmaction2.pth"))
    assert run.returncode == 0 and "layout:     MViT" in one_line(run) and "not supported" in run.stdout


def swin_large_file(path, window=(2, 7, 7)) -> None:
    """The release's Swin-L shapes (no torchvision name), values one number each, the real indices."""
    with torch.device("meta"):
        swin = SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=192, depths=[2, 2, 18, 2],
                                 num_heads=[6, 12, 24, 48], window_size=list(window))
    state = shapes_only(swin)
    for key in [k for k in state if k.endswith("relative_position_index")]:
        state[key] = relative_position_index(window)
    torch.save(state, path)


def test_swin_large_refusal_suggests_its_kwargs(tmp_path, inspect):
    swin_large_file(tmp_path / "swin_large.pth")
    kwargs = "{embed_dim: 192, patch_size: [2, 4, 4], depths: [2, 2, 18, 2], num_heads: [6, 12, 24, 48], window_size: [2, 7, 7]}"
    with pytest.raises(WeightsError) as err:
        build({"family": "video_swin", "name": "swin3d_b"}, tmp_path / "swin_large.pth")
    assert str(err.value).endswith(f"no named size fits these weights: set model.backbone.kwargs: {kwargs}")
    run = inspect(str(tmp_path / "swin_large.pth"))
    assert run.returncode == 0
    assert f"e.g. --family video_swin --name swin3d_t --kwargs '{kwargs}')" in one_line(run)


def gelu_notes(spec: dict, path) -> list[str]:
    with capture_notes() as notes:
        build(spec, path)
    return [n for n in notes if "QuickGELU" in n]


def test_quickgelu_named_when_clip_weights_from_openai_meet_gelu(tmp_path):
    clip = tiny_open_clip()
    torch.jit.save(torch.jit.script(clip), str(tmp_path / "ViT-B-16.pt"))  # OpenAI's TorchScript archive
    assert gelu_notes(CLIP, tmp_path / "ViT-B-16.pt") == [
        "OpenAI CLIP weights, trained with QuickGELU, loaded into vidpeft-tiny-clip which uses GELU (results will "
        "be off): use model.backbone.kwargs: {quick_gelu: true}"]
    assert gelu_notes({**CLIP, "kwargs": {"quick_gelu": True}}, tmp_path / "ViT-B-16.pt") == []
    torch.save(clip.state_dict(), tmp_path / "open_clip_pytorch_model.bin")  # not OpenAI's as far as one can tell
    assert gelu_notes(CLIP, tmp_path / "open_clip_pytorch_model.bin") == []

    tower = timm.create_model("vit_base_patch16_clip_224", pretrained=False, **TIMM_CLIP)
    hub = tmp_path / "models--timm--vit_base_patch16_clip_224.openai"  # the hub cache's folder name
    hub.mkdir()
    save_file(tower.state_dict(), str(hub / "model.safetensors"))
    timm_spec = {**VIT, "name": "vit_base_patch16_clip_224"}
    assert gelu_notes(timm_spec, hub / "model.safetensors") == [
        "OpenAI CLIP weights, trained with QuickGELU, loaded into vit_base_patch16_clip_224 which uses GELU "
        "(results will be off): use model.backbone.name: vit_base_patch16_clip_quickgelu_224"]
    assert gelu_notes({**timm_spec, "name": "vit_base_patch16_clip_quickgelu_224"}, hub / "model.safetensors") == []
    assert quick_gelu_name("openclip_vit", "ViT-B-16") == ("model.backbone.name: ViT-B-16-quickgelu or "
                                                           "model.backbone.kwargs: {quick_gelu: true}")


def test_train_preflight_says_the_same_one_line(tmp_path):
    """`vidpeft train` checks the model on the driver before Ray: its error is the loader's line."""
    from components.config import ConfigError
    from pipelines.run.preflight import check_model
    from tests.components.test_config_safety import experiment

    torch.save(tiny_swin_state(), tmp_path / "swin.pth")
    with pytest.raises(ConfigError) as err:  # was: "Input tensor should be 4D (out_ch, in_ch, h, w)"
        check_model(experiment(f"model.backbone.checkpoint={tmp_path / 'swin.pth'}"))
    assert str(err.value) == (f"model.backbone.checkpoint: {tmp_path / 'swin.pth'}: a torchvision swin3d state dict "
                              "file, which the timm_vit family does not load: set model.backbone.family: video_swin")


def test_inspect_says_what_vidpeft_s_own_files_are(tmp_path, inspect):
    """An `export` file (a whole model, config inside) was 'an unrecognised layout: give --family and --name';
    a run directory was 'weights file not found'."""
    import json

    from pipelines.infer.trained import STANDALONE_KEY

    config = {"model": {"backbone": {"family": "timm_vit", "name": "vit_tiny_patch16_224"},
                        "adapters": [{"type": "mhva"}, {"type": "prefix"}]}}
    save_file({"backbone.vit.pos_embed": torch.zeros(1, 17, 8), "head.1.weight": torch.zeros(3, 8)},
              str(tmp_path / "model.safetensors"), metadata={STANDALONE_KEY: json.dumps({"config": config})})
    run = inspect(str(tmp_path / "model.safetensors"))
    assert run.returncode == 0
    assert "a `vidpeft export` file: backbone timm_vit vit_tiny_patch16_224, adapters: mhva, prefix" in one_line(run)
    run = inspect(str(tmp_path))
    assert run.returncode == 2 and "is a directory; give a weights file" in one_line(run)
