"""The GPU suite's end-to-end cell: Ray Data decode -> host-to-device -> training step, one training process.

The clips come from synthetic videos through the pipeline's own ingest (``pipelines.data.ingest.build_dataset``:
the manifest stream, a pool of ``ClipDecoder`` actors) and ``iter_torch_batches(device=...)`` moves each batch
to the device as the Train worker's loop does; this process plays the one worker. Measured after warm-up
batches (decoder pool started, model warmed), each timed step is split in two:

- ``step_s``: the step on the batch just delivered to the device (median): the compute;
- ``e2e_step_s``: wall seconds per step, waiting for the batch included (median);
- ``wait_fraction``: the share of that spent waiting for data. Above ``DATA_BOUND_WAIT`` the run is
  data-bound (the decoders cannot keep up), else compute-bound;
- ``decode_cpu_s_per_clip``: one decoder's CPU seconds per clip at this size (``decode_clip`` in this
  process, after a warm-up clip), and ``decoder_cpus_needed`` = decode seconds per clip x clips per step /
  step seconds, rounded up: the decoder CPUs that keep the step fed.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

DATA_BOUND_WAIT = 0.1  # waiting for data above this share of a step's wall time: data-bound
E2E_MIN_STEPS = 3  # timed steps at least, whatever --steps says


def decode_cost(rows: list[dict], frames: int, size: int, decoder: str, clips: int = 6) -> float:
    """CPU seconds per clip of ``decode_clip`` in this process (the first clip, a warm-up, not counted)."""
    from components.video.decode import ClipSpec, decode_clip

    spec = ClipSpec(num_frames=frames, size=size, sampling="segment", stride=2)
    ranges = ("start_frame", "end_frame", "start_sec", "end_sec")
    picked = [rows[i % len(rows)] for i in range(clips + 1)]
    decode_clip(picked[0]["video_path"], spec, decoder=decoder, **{k: picked[0].get(k) for k in ranges})
    c0 = time.process_time()
    for r in picked[1:]:
        decode_clip(r["video_path"], spec, decoder=decoder, **{k: r.get(k) for k in ranges})
    return (time.process_time() - c0) / clips


def run_e2e(cfg, manifest: Path, a, device) -> dict:
    """The end-to-end cell of ``cfg`` (a cell_config) on the videos of ``manifest``; a dict for the JSON."""
    import pyarrow as pa
    import ray
    import torch

    from components.data.manifest import read_manifest
    from components.model import build_model
    from pipelines.data.ingest import DecodeSettings, build_dataset
    from pipelines.runtime.ray_env import ensure_ray

    import train_step

    if cfg.model.modalities:
        raise ValueError("the end-to-end cell decodes video only: choose a preset without side modalities")
    bb = cfg.model.backbone
    table: pa.Table = read_manifest(manifest, check_files=False).split("train")
    ensure_ray()  # a running Ray (RAY_ADDRESS) is joined; else a local one on loopback
    decoders = a.e2e_decoders or max(int(ray.available_resources().get("CPU", 1)) - 1, 1)
    settings = DecodeSettings(num_frames=bb.num_frames, size=bb.img_size, sampling="segment", stride=2, training=True,
                              seed=0, task="single_label", num_outputs=a.classes, decoder=a.e2e_decoder)
    timed = max(a.steps, E2E_MIN_STEPS)
    steps = max(a.warmup, 1) + timed
    epochs = math.ceil((steps + 1) * a.batch / table.num_rows) + 1  # enough stream for every step
    ds = build_dataset(table, settings, decode_actors=decoders, decode_cpus=1.0, decode_batch_size=a.batch,
                       epochs=range(epochs))
    names = [f"class {i}" for i in range(a.classes)]
    model = build_model(cfg.model, a.classes, names).to(device).train()
    step = train_step.make_train_step(model, cfg, device, a.batch)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    batches = iter(ds.iter_torch_batches(batch_size=a.batch, device=device, drop_last=True))
    waits, computes, started, first_batch_s = [], [], time.perf_counter(), None
    for i in range(steps):
        t0 = time.perf_counter()
        batch = next(batches)  # decode (actors) + collate + host-to-device
        batch = {"video": batch["video"], "target": batch["target"] % a.classes}
        t1 = time.perf_counter()
        first_batch_s = first_batch_s if first_batch_s is not None else t1 - started
        step(batch)
        sync()
        if i >= steps - timed:  # after the warm-up: the decoder pool is up, the model warm
            waits.append(t1 - t0)
            computes.append(time.perf_counter() - t1)
    del batches
    walls = [w + c for w, c in zip(waits, computes)]
    step_s, e2e_s = statistics.median(computes), statistics.median(walls)
    wait = sum(waits) / max(sum(walls), 1e-9)
    rows = table.select(["video_path", *(c for c in ("start_frame", "end_frame", "start_sec", "end_sec")
                                          if c in table.column_names)]).to_pylist()
    per_clip = decode_cost(rows, bb.num_frames, bb.img_size, a.e2e_decoder)
    needed = per_clip * a.batch / step_s
    return {
        "decoders": decoders, "decoder": a.e2e_decoder, "batch": a.batch, "steps": timed,
        "first_batch_s": first_batch_s, "step_s": step_s, "e2e_step_s": e2e_s,
        "e2e_clips_per_s": a.batch / e2e_s, "clips_per_s": a.batch / step_s,
        "wait_fraction": wait, "bound": "data" if wait > DATA_BOUND_WAIT else "compute",
        "decode_cpu_s_per_clip": per_clip, "decoder_cpus_needed_exact": needed,
        "decoder_cpus_needed": max(math.ceil(needed), 1),
        "rule": "decoder CPUs = decode CPU s per clip x clips per step / step s (rounded up)",
    }
