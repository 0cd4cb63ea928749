"""One record per backbone family (issue #26 item 4): every registered family describes itself, the
generic weights code reads only the registry (a family defined in one file works end to end), and
backbones never import adapters nor weights import backbones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import components.backbones  # noqa: F401  (registers the built-in families)
from components import backbone_family
from components.backbone_family import BackboneFamily, PublishedLayout, families, register_family
from components.backbones import BackboneConfig, build_backbone
from components.backbones.spec import BackboneSpec
from components.config import ConfigError
from components.weights.families import read_for_family
from components.weights.identify import looks_like
from components.weights.layouts import detect_layout, layout_name
from components.weights.reader import WeightsError
from components.weights.strict import load_strict

ROOT = Path(__file__).resolve().parents[3]


def test_every_family_describes_itself():
    assert sorted(families()) == ["openclip_vit", "timm_vit", "video_swin", "videomae", "vivit"]
    layouts = [lay.name for fam in families().values() for lay in fam.layouts]
    assert len(layouts) == len(set(layouts))  # each published layout has one family
    for name, fam in families().items():
        assert fam.name == name and list(fam.sizes()), name
        assert set(fam.reads) <= set(layouts), name  # what it reads besides its own is someone's layout
        with pytest.raises(ConfigError, match=r"model\.backbone\.kwargs\.pretrained: a loading setting"):
            fam.check_kwargs({"pretrained": True})


# ---- a family in one file: this is all of it -----------------------------------------------------------

class ToyBackbone(nn.Module):
    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(3, int(config.kwargs.get("width", 4)))
        if config.checkpoint:
            wf, where, notes = read_for_family(config.checkpoint, "model.backbone.checkpoint", "toy")
            load_strict(self, wf.tensors, where=where, family="toy", name=config.name, notes=notes)
        self.spec = BackboneSpec(family="toy", feature_dim=self.proj.out_features, mean=(0.5,) * 3, std=(0.5,) * 3,
                                 blocks=["proj"], sites={"block": ""}, block_dims=[4], block_heads=[1])


def toy_kwargs(kwargs: dict) -> dict:
    if set(kwargs) - {"width"}:
        raise ConfigError(f"model.backbone.kwargs: toy takes width only, not {sorted(set(kwargs) - {'width'})}")
    return kwargs


TOY = BackboneFamily(
    name="toy", build=ToyBackbone, check_kwargs=toy_kwargs, sizes=lambda: ["toy_s", "toy_l"],
    layouts=(PublishedLayout("toy_release", "Toy release (proj.weight of 3 inputs)",
                             lambda s: "proj.weight" in s and s["proj.weight"].shape[-1] == 3, order=5),),
    guess_size=lambda s: {4: "toy_s", 8: "toy_l"}.get(s["proj.weight"].shape[0]),
)


@pytest.fixture
def toy_family():
    register_family(TOY)  # the one registration line
    yield TOY
    backbone_family._FAMILIES.pop("toy")


def test_a_family_defined_in_one_file_works_end_to_end(tmp_path, toy_family):
    cfg = {"family": "toy", "name": "toy_s", "img_size": 8, "num_frames": 2}
    model = build_backbone(BackboneConfig(**cfg))
    torch.save(model.state_dict(), tmp_path / "toy.pth")
    assert detect_layout(model.state_dict()) == "toy_release"
    assert layout_name("toy_release") == "Toy release (proj.weight of 3 inputs)"
    assert looks_like(model.state_dict()) == [("toy", "toy_s")]
    loaded = build_backbone(BackboneConfig(**cfg, checkpoint=str(tmp_path / "toy.pth")))
    assert torch.equal(loaded.proj.weight, model.proj.weight)
    with pytest.raises(WeightsError, match=r"toy\.pth: does not fit toy toy_l: .*look like toy_s"):
        build_backbone(BackboneConfig(**{**cfg, "name": "toy_l", "kwargs": {"width": 8}},
                                      checkpoint=str(tmp_path / "toy.pth")))
    # a toy file in another family, and another family's file in toy: one line naming the family
    with pytest.raises(WeightsError, match=r"a Toy release .* file, which the timm_vit family does not load: "
                                           r"set model\.backbone\.family: toy and model\.backbone\.name: toy_s"):
        build_backbone(BackboneConfig(family="timm_vit", name="vit_tiny_patch16_224", checkpoint=str(tmp_path / "toy.pth")))


# ---- import arrows ---------------------------------------------------------------------------------------

def imported_modules(package: str) -> dict[str, set[str]]:
    """module file -> the components.* modules it imports (at any depth of the file)."""
    out = {}
    for path in (ROOT / package.replace(".", "/")).glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        out[path.name] = {n for n in names if n.startswith("components.")}
    return out


def test_no_arrow_from_backbones_to_adapters_nor_from_weights_to_backbones():
    for name, mods in imported_modules("components.backbones").items():
        assert not [m for m in mods if m.startswith("components.adapters")], name
    for name, mods in imported_modules("components.weights").items():
        assert not [m for m in mods if m.startswith("components.backbones")], name
    assert not imported_modules("components")["backbone_family.py"]  # the registry is a leaf
    assert not imported_modules("components")["token_layout.py"]


def test_a_family_module_is_imported_when_its_family_is_first_needed():
    """Importing the package registers the families by module; timm and open_clip load only for theirs."""
    import subprocess
    import sys

    code = ("import sys; import components.backbones, components.model; "
            "from components.backbone_family import family; "
            "before = {m for m in ('timm', 'open_clip') if m in sys.modules}; "
            "assert family('timm_vit').name == 'timm_vit'; "
            "print(sorted(before), 'open_clip' in sys.modules, 'timm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    # components.model imports timm's Attention for prefix tuning (components/backbones/attention.py), not open_clip
    assert out.split() == ["['timm']", "False", "True"]
