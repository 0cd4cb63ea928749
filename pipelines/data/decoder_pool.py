"""``data.decode_actors: auto``: the decoder pool sized so the training step is not kept waiting for clips.

The rule is the GPU suite's end-to-end cell's (benchmarks/gpu_e2e.py): the decoder CPUs that keep a step fed are

    decode CPU seconds per clip x clips per step / step seconds       (rounded up)

and a pool of that many actors (each reserving ``data.decode_cpus``) is asked for, at least one and at most what
the cluster's CPUs left over by the Train workers can hold. The decode cost is measured on the driver before the
run (``measure_decode_cost``: a few clips of the training split with the run's decoder and clip size, after a
warm-up clip). The step time is ``data.auto_step_seconds``, the step's seconds as measured on the training device
(the end-to-end cell's ``step_s``, or a previous run's); 0 (unknown) sizes the pool to every free CPU, which
never starves the step and costs only idle actors. Inference (evaluate, zero-shot, predict) has no training step
to match: ``auto`` there is every free CPU too.
"""

from __future__ import annotations

import math
import time

AUTO = "auto"
PROBE_CLIPS = 3  # clips timed by measure_decode_cost (after one warm-up clip)


def decoders_needed(decode_s_per_clip: float, clips_per_step: int, step_s: float, free_cpus: float,
                    decode_cpus: float) -> int:
    """Decoder actors for a step of ``clips_per_step`` clips taking ``step_s`` seconds, when decoding a clip
    costs ``decode_s_per_clip`` CPU seconds: ``ceil(decode x clips / step / decode_cpus)`` actors, at least 1 and
    at most ``free_cpus / decode_cpus``. ``step_s`` 0 (unknown): that upper bound."""
    cap = max(int(math.floor(free_cpus / decode_cpus + 1e-9)), 1)
    if step_s <= 0:
        return cap
    cpus = decode_s_per_clip * clips_per_step / step_s
    return min(max(math.ceil(cpus / decode_cpus - 1e-9), 1), cap)


def free_cpus(train_cpus: float) -> float:
    """CPUs of the connected Ray cluster left once the Train workers hold ``train_cpus``."""
    import ray

    return max(float(ray.cluster_resources().get("CPU", 1.0)) - train_cpus, 0.0)


def pool_limit(decode_actors: int | str, decode_cpus: float, train_cpus: float = 0.0) -> int:
    """The pool's largest size: the configured number, or (auto) every CPU the cluster has free."""
    if decode_actors != AUTO:
        return int(decode_actors)
    return decoders_needed(0.0, 0, 0.0, free_cpus(train_cpus), decode_cpus)


def measure_decode_cost(table, settings, clips: int = PROBE_CLIPS) -> float:
    """CPU seconds one decoder spends per clip of ``table`` (ingest's DecodeSettings), in this process: the
    first clip is a warm-up; 0.0 for an empty table. Packed manifests are measured on their first member."""
    from components.video.decode import ClipSpec, decode_clip

    if table.num_rows == 0:
        return 0.0
    spec = ClipSpec(num_frames=settings.num_frames, size=settings.decode_size, sampling=settings.sampling,
                    stride=settings.stride, target_fps=settings.target_fps)
    ranges = [c for c in ("start_frame", "end_frame", "start_sec", "end_sec") if c in table.column_names]
    rows = table.select(["video_path", *ranges]).slice(0, clips + 1).to_pylist()
    picked = [rows[i % len(rows)] for i in range(clips + 1)]

    def decode(row: dict) -> None:
        decode_clip(row["video_path"], spec, decoder=settings.decoder, fallback=settings.decoder_fallback or None,
                    **{k: row.get(k) for k in ranges})

    decode(picked[0])
    started = time.process_time()
    for row in picked[1:]:
        decode(row)
    return (time.process_time() - started) / clips


def auto_decode_actors(table, settings, clips_per_step: int, step_s: float, train_cpus: float,
                       decode_cpus: float) -> tuple[int, dict]:
    """(actors, what sized them) for a training split: the rule above on the measured decode cost."""
    from components.data.packed import is_packed
    from components.video.decode import VideoDecodeError

    per_clip, step = 0.0, step_s
    if step_s > 0 and not is_packed(table):  # a packed row names a tar member: unknown cost, every free CPU
        try:
            per_clip = measure_decode_cost(table, settings)
        except VideoDecodeError:  # the run reports such clips itself; the pool gets every free CPU
            step = 0.0
    else:
        step = 0.0
    free = free_cpus(train_cpus)
    actors = decoders_needed(per_clip, clips_per_step, step, free, decode_cpus)
    return actors, {"decode_s_per_clip": per_clip, "clips_per_step": clips_per_step, "step_s": step_s,
                    "free_cpus": free, "decode_cpus": decode_cpus, "actors": actors}
