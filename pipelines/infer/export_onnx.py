"""`vidpeft export --onnx`: the classifier as an ONNX graph with a dynamic batch axis.

Input ``video``: uint8 (N, T, S, S, 3), the decoder's clips (one evaluation view each; several views
of a video are N rows whose outputs the caller averages, as ``vidpeft predict`` does). Output
``logits`` (N, K); for M2-CLIP also ``embedding`` (N, D), the L2-normalised clip embedding. The graph
holds the model with its mergeable adapters merged (the rest as modules) and normalises the clips
itself. M2-CLIP: the image tower plus the class-text embeddings of the trained classes, computed
once here with the eval templates, so zero-shot scoring (Eq. 11) runs without the text tower; the
``logits`` follow ``m2clip.eval_head`` (vc, xm or both) as the torch model's do.

The graph's metadata (``vidpeft_standalone``) carries the config and class names, so `vidpeft serve`
loads model.onnx alone. After writing, the graph is run with onnxruntime on CPU on a random batch and
compared with torch: the max abs difference is printed and stored in export.json.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from components.config import to_dict
from pipelines.infer.trained import STANDALONE_KEY, Trained

ONNX_FILE = "model.onnx"
OPSET = 18


class ClassifierGraph(nn.Module):
    """A model kind's evaluation logits from uint8 clips (every kind's ``forward({"video"})``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.model({"video": video})["logits"]


class M2ClipGraph(nn.Module):
    """M2-CLIP without its text tower: image tower, precomputed class texts, VC head."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        with torch.no_grad():
            texts = model.class_embeddings(model.class_names, model.eval_templates)  # (C, D), unit rows
        self.register_buffer("class_text", texts.detach().clone())
        self.eval_head = model.config.m2clip.eval_head

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, v = self.model.encode_video(video)  # (N, D)
        v_norm = F.normalize(v, dim=-1)
        xm = self.model.logit_scale * v_norm @ self.class_text.t()  # (N, C), Eq. 11
        if self.eval_head == "xm":
            logits = xm
        else:
            vc = self.model.vc_head(v)
            logits = vc if self.eval_head == "vc" else ((vc.softmax(-1) + xm.softmax(-1)) / 2).log()
        return logits, v_norm


def graph_of(t: Trained, model: nn.Module) -> tuple[nn.Module, list[str]]:
    if t.cfg.model.kind == "m2clip":
        return M2ClipGraph(model).eval(), ["logits", "embedding"]
    return ClassifierGraph(model).eval(), ["logits"]


def example_clips(t: Trained, batch: int = 2, seed: int = 0) -> torch.Tensor:
    b = t.cfg.model.backbone
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, b.num_frames, b.img_size, b.img_size, 3), dtype=torch.uint8, generator=g)


def _export(graph: nn.Module, example: torch.Tensor, outputs: list[str], path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter deprecation / tracing notes: the comparison below is the check
        program = torch.onnx.export(graph, (example,), input_names=["video"], output_names=outputs,
                                    dynamic_shapes={"video": {0: batch}}, opset_version=OPSET, dynamo=True,
                                    verbose=False)
    program.save(str(path))


def _add_metadata(path: Path, t: Trained) -> None:
    import onnx

    proto = onnx.load(str(path))
    meta = {STANDALONE_KEY: json.dumps({"config": to_dict(t.cfg), "class_names": t.class_names,
                                        "target_names": t.target_names})}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def compare(path: Path, graph: nn.Module, clips: torch.Tensor) -> float:
    """Max abs difference between onnxruntime (CPU) and torch on ``clips``, over every output."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"video": clips.numpy()})
    with torch.no_grad():
        want = graph(clips)
    want = want if isinstance(want, tuple) else (want,)
    return max(float((torch.from_numpy(g) - w).abs().max()) for g, w in zip(got, want))


def write_onnx(t: Trained, model: nn.Module, out_dir: Path) -> dict:
    """Write ``out_dir/model.onnx`` for the (merged where possible) ``model`` that ``t`` describes."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        from components.config import ConfigError

        raise ConfigError(f"--onnx needs the onnx extras: pip install 'vidpeft[onnx]' ({e.name} is missing)") from None
    graph, outputs = graph_of(t, model.cpu().eval())
    path = Path(out_dir) / ONNX_FILE
    tmp = path.with_suffix(".onnx.tmp")
    _export(graph, example_clips(t), outputs, tmp)
    _add_metadata(tmp, t)
    tmp.replace(path)
    diff = compare(path, graph, example_clips(t, batch=3, seed=1))  # another batch size than traced
    size_mb = path.stat().st_size / 2**20
    print(f"[vidpeft] ONNX model: {path} ({size_mb:.1f} MiB; input video uint8 (N, T, S, S, 3), outputs "
          f"{', '.join(outputs)}); onnxruntime vs torch on 3 random clips: max abs diff {diff:.2e}")
    return {"file": str(path), "outputs": outputs, "max_abs_diff": diff}
