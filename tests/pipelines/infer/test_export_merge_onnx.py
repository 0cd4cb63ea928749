"""`vidpeft export --merge` and `--onnx` on tiny runs: the merged file loads and predicts as the unmerged run
(within 1e-5) with the frozen model's parameter count and FLOPs; unmergeable adapters refuse with their
reason; the ONNX graph runs in onnxruntime (CPU) at several batch sizes and agrees with torch; M2-CLIP's
graph has no text tower and scores the trained classes from the precomputed class texts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks.tiny_runs import LORA, TINY_CLIP, TINY_VIT, m2clip_overrides, write_run
from components.flops import forward_flops
from pipelines.cli import main
from pipelines.infer.trained import build_trained, load_trained

ONNX_BOUND = 1e-4  # float32 kernels of two runtimes


def clips(n: int, seed: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 4, 32, 32, 3), dtype=torch.uint8, generator=g)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_merge_export_equals_the_run_at_the_frozen_models_cost(tmp_path):
    run = write_run(tmp_path, TINY_VIT, [LORA])
    assert main(["export", str(run), "--out", str(tmp_path / "out"), "--merge", "--no-mlflow"]) == 0
    unmerged = build_trained(load_trained(run))
    merged_t = load_trained(tmp_path / "out" / "model.safetensors")
    assert merged_t.cfg.model.adapters == []  # the config that rebuilds the merged model
    merged = build_trained(merged_t)
    batch = {"video": clips(4)}
    with torch.no_grad():
        diff = (merged(batch)["logits"] - unmerged(batch)["logits"]).abs().max().item()
    print(f"merged export vs unmerged run: max abs diff {diff:.2e}")
    assert diff <= 1e-5
    frozen = build_trained(load_trained(write_run(tmp_path / "frozen", TINY_VIT, [])))
    assert n_params(merged) == n_params(frozen) == frozen.spec.total_params + 3 * 32 + 3  # backbone + head
    assert n_params(unmerged) > n_params(merged)
    assert forward_flops(merged, {"video": clips(1)}) == forward_flops(frozen, {"video": clips(1)})
    assert forward_flops(unmerged, {"video": clips(1)}) > forward_flops(merged, {"video": clips(1)})
    report = json.loads((tmp_path / "out" / "export.json").read_text())
    assert report["merged"] and report["adapters"] == ["lora: merged into the frozen weights"]


def test_merge_refuses_unmergeable_adapters_with_their_reason(tmp_path, capsys):
    run = write_run(tmp_path, TINY_VIT, [LORA, {"type": "bottleneck", "sites": ["mlp"], "bottleneck": 4}])
    assert main(["export", str(run), "--out", str(tmp_path / "out"), "--merge", "--no-mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bottleneck: not mergeable: a ReLU between its down and up projections" in err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_classifier_merged_where_possible_dynamic_batch(tmp_path):
    adapters = [LORA, {"type": "bottleneck", "sites": ["mlp"], "bottleneck": 4}]  # LoRA merges, bottleneck stays
    run = write_run(tmp_path, TINY_VIT, adapters)
    assert main(["export", str(run), "--out", str(tmp_path / "out"), "--onnx", "--no-mlflow"]) == 0
    session = _session(tmp_path / "out" / "model.onnx")
    assert [i.name for i in session.get_inputs()] == ["video"]
    unmerged = build_trained(load_trained(run))
    for n in (1, 5):
        video = clips(n, seed=n)
        (got,) = session.run(["logits"], {"video": video.numpy()})
        with torch.no_grad():
            want = unmerged({"video": video})["logits"].numpy()
        diff = float(np.abs(got - want).max())
        print(f"onnxruntime vs torch (unmerged run), batch {n}: max abs diff {diff:.2e}")
        assert got.shape == (n, 3) and diff <= ONNX_BOUND
    export = json.loads((tmp_path / "out" / "export.json").read_text())
    assert export["onnx"]["max_abs_diff"] <= ONNX_BOUND
    assert export["adapters"][1].startswith("bottleneck: kept as a module, not mergeable")


def test_onnx_m2clip_runs_zero_shot_without_the_text_tower(tmp_path):
    import onnx

    text_lora = {**LORA, "layers": [-1]}
    run = write_run(tmp_path, TINY_CLIP, [LORA], overrides=m2clip_overrides([text_lora]))
    assert main(["export", str(run), "--out", str(tmp_path / "out"), "--onnx", "--no-mlflow"]) == 0
    path = tmp_path / "out" / "model.onnx"
    names = {i.name for i in onnx.load(str(path)).graph.initializer}
    assert not any("token_embedding" in n or n.startswith("model.text.") for n in names)
    model = build_trained(load_trained(run))
    video = clips(3)
    logits, embedding = _session(path).run(["logits", "embedding"], {"video": video.numpy()})
    with torch.no_grad():
        want = model.zero_shot_logits(video).numpy()  # Eq. 11 through the (unmerged) text tower
    diff = float(np.abs(logits - want).max())
    print(f"M2-CLIP onnxruntime vs torch zero-shot: max abs diff {diff:.2e}")
    assert diff <= ONNX_BOUND
    assert np.allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["vidpeft_standalone"])["class_names"] == ["running", "jumping", "swimming"]


@pytest.mark.parametrize("flag", ["--merge", "--onnx"])
def test_export_flags_in_help(flag, capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert flag in capsys.readouterr().out


def test_onnx_scorer_predicts_like_the_run(tmp_path):
    """What `vidpeft serve model.onnx` scores with: the same rows as predict on the run (windows too)."""
    from components.data.synth import write_mp4
    from pipelines.infer.onnx_scorer import OnnxScorer
    from pipelines.infer.predict_core import Scorer, predict_local

    run = write_run(tmp_path, TINY_VIT, [LORA])
    assert main(["export", str(run), "--out", str(tmp_path / "out"), "--onnx", "--no-mlflow"]) == 0
    video = tmp_path / "clip.mp4"
    write_mp4(video, np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), fps=8)
    onnx_rows = predict_local(OnnxScorer(tmp_path / "out" / "model.onnx", top_k=3), [str(video)], 2.0, 2.0)
    torch_rows = predict_local(Scorer(load_trained(run), top_k=3), [str(video)], 2.0, 2.0)
    assert onnx_rows.num_rows == 3
    for a, b in zip(onnx_rows.to_pylist(), torch_rows.to_pylist()):
        assert a["top_k_labels"] == b["top_k_labels"] and (a["start_sec"], a["end_sec"]) == (b["start_sec"], b["end_sec"])
        np.testing.assert_allclose(a["top_k_scores"], b["top_k_scores"], rtol=0, atol=1e-5)
    with pytest.raises(Exception, match="trained classes only"):
        OnnxScorer(tmp_path / "out" / "model.onnx").variant(["x", "y"])
