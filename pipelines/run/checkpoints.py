"""A run's checkpoints: writing one so a kill never leaves a half one chosen, finding the newest
complete one (a local dir or a storage URI), and restoring from it. The driver (`vidpeft train`:
resume, the final weights) and every Train worker (restore, the checkpoint Ray never heard of)
import this one module.

A checkpoint dir holds weights.safetensors (trainable weights + model config), optimizer.pt,
scheduler.pt, any extra files (ema.pt: pipelines/run/regularisers.py) and state.json, written last and
atomically, which lists every file's size and sha256.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pipelines.run.checkpoint_digest import checkpoint_intact, file_digests
from pipelines.runtime.phase_log import mark

# torch is imported where a checkpoint is saved or restored: Ray Train's controller finds the newest
# checkpoint through this module (pipelines/run/stream_position.py) and need not pay torch's import
WEIGHTS = "weights.safetensors"
STATE = "state.json"
SCALER = "scaler.pt"  # fp16 only: the GradScaler's state (its loss scale)
# A mid-epoch checkpoint (checkpoint.every_steps/every_minutes): its state.json's "epoch" is the last
# finished epoch (-1: none yet) and "mid_epoch" says how far into the next one it is
# (pipelines/run/stream_position.py); it ranks after that epoch's end and before the next epoch's end.
MID_EPOCH = "mid_epoch"


def progress(state: dict) -> tuple[int, int]:
    """How far the run a checkpoint's state.json describes had got: (finished epoch, clips into the next)."""
    return state["epoch"], (state.get(MID_EPOCH) or {}).get("clips", 0)


def save_checkpoint(directory: Path, model, optimizer, scheduler, state: dict, model_config: dict,
                    scaler=None, extra: dict | None = None) -> None:
    """Write a checkpoint dir whose state.json, written last and atomically, lists every file's size.

    A kill mid-save (or a copy to storage cut short, in whatever order Ray copies the files) leaves a
    dir that ``checkpoint_complete`` rejects, so the previous checkpoint stays the one resumed from.
    """
    import torch

    from components.checkpoint import save_weights, trainable_state_dict
    from components.engine import unwrap

    mark("checkpoint_save")
    save_weights(directory / WEIGHTS, trainable_state_dict(unwrap(model)), model_config)
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    torch.save(scheduler.state_dict(), directory / "scheduler.pt")
    names = [WEIGHTS, "optimizer.pt", "scheduler.pt"]
    if scaler is not None:  # fp16: the loss scale it has found (resuming at 65536 again costs skipped steps)
        torch.save(scaler.state_dict(), directory / SCALER)
        names.append(SCALER)
    for name, obj in (extra or {}).items():  # e.g. the EMA's state, listed and checksummed like the rest
        torch.save(obj, directory / name)
        names.append(name)
    files = {name: (directory / name).stat().st_size for name in names}
    tmp = directory / (STATE + ".tmp")  # sizes catch a cut copy, checksums a corrupted one
    tmp.write_text(json.dumps({**state, "files": files, "sha256": file_digests(directory, names)}, indent=2))
    os.replace(tmp, directory / STATE)
    mark("checkpoint_saved")


def checkpoint_complete(state: dict, sizes: dict[str, int]) -> bool:
    """True when every file that ``state`` (a parsed state.json) lists is present at its recorded size.

    ``sizes``: file name -> size of what the checkpoint dir actually holds. A state.json without a
    file list (older checkpoints) needs the weights file only.
    """
    expected = state.get("files") or {WEIGHTS: None}
    return "epoch" in state and all(
        name in sizes and (size is None or sizes[name] == size) for name, size in expected.items()
    )


def restore_checkpoint(directory: Path, model, optimizer, scheduler, model_config: dict, scaler=None) -> dict:
    """Load weights, optimizer, schedule (and the fp16 scaler's state) from a checkpoint dir; returns
    its state.json, with ``schedule_steps: [saved, now]`` when this run plans another length (optim.epochs
    raised on --resume): the steps taken are kept and the rest follows this run's schedule, where the saved
    one would hold the added epochs at its floor lr."""
    import warnings

    import torch

    from components.checkpoint import load_weights
    from components.engine import unwrap

    load_weights(unwrap(model), directory / WEIGHTS, model_config)
    optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=True))
    saved, planned = torch.load(directory / "scheduler.pt", weights_only=True), scheduler.state_dict()
    saved_total = saved.get("total_steps")
    changed = saved_total is not None and saved_total != planned.get("total_steps")
    if changed:
        saved = {**saved, "total_steps": planned["total_steps"], "_schedule_phases": planned["_schedule_phases"]}
    scheduler.load_state_dict(saved)
    if changed:  # the lr of the step it resumes at, on this run's curve (the optimizer holds the saved one)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # get_lr outside step() warns; here it is the point
            for group, lr in zip(optimizer.param_groups, scheduler.get_lr()):
                group["lr"] = lr
    if scaler is not None and (directory / SCALER).exists():
        scaler.load_state_dict(torch.load(directory / SCALER, weights_only=True))
    state = json.loads((directory / STATE).read_text())
    if changed:
        state["schedule_steps"] = [saved_total, planned["total_steps"]]
    return state


def latest_checkpoint(storage: str | Path) -> str | None:
    """The newest complete checkpoint (furthest ``progress``) under ``storage``, a local dir or a URI.

    Complete = state.json parses and every file it lists is there at its recorded size, so a dir
    left by a kill during a save or during Ray's copy to storage is never chosen.
    """
    import pyarrow.fs as pafs

    location = str(storage)
    fs, root = pafs.FileSystem.from_uri(location if "://" in location else str(Path(location).absolute()))
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return None
    sizes: dict[str, dict[str, int]] = {}  # <run>/checkpoint_* -> file name -> size
    # allow_not_found: in a bucket the folder is only its objects, and it can vanish between the two calls
    # (a starting run's write check, pipelines/run/storage_check.py, is its only object for a moment)
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        parts = info.path[len(root):].strip("/").split("/")
        if info.type == pafs.FileType.File and len(parts) == 3 and parts[1].startswith("checkpoint_"):
            sizes.setdefault(f"{parts[0]}/{parts[1]}", {})[parts[2]] = info.size
    candidates = []  # (progress, rel) of complete checkpoints
    states = {}
    for rel, files in sorted(sizes.items()):
        if STATE not in files:
            continue
        try:
            with fs.open_input_stream(f"{root.rstrip('/')}/{rel}/{STATE}") as f:
                state = json.loads(f.read())
        except (OSError, ValueError):
            continue  # unreadable or half-written: never chosen over a complete one
        if isinstance(state, dict) and checkpoint_complete(state, files):
            candidates.append((progress(state), rel))
            states[rel] = state
    for (epoch, _), rel in sorted(candidates, reverse=True):
        if checkpoint_intact(fs, f"{root.rstrip('/')}/{rel}", states[rel]):  # the newest whose bytes match
            return f"{location.rstrip('/')}/{rel}"
        print(f"[vidpeft] checkpoint {location.rstrip('/')}/{rel} (epoch {epoch}) fails its checksum: "
              "passed over for the previous one", file=sys.stderr, flush=True)
    return None


def state_of(checkpoint) -> dict:
    """A ``ray.train.Checkpoint``'s state.json, read where it is stored."""
    with checkpoint.filesystem.open_input_stream(checkpoint.path.rstrip("/") + "/" + STATE) as f:
        return json.loads(f.read())


def epoch_of(checkpoint) -> int:
    """The last finished epoch a ``ray.train.Checkpoint`` holds (-1: a mid-epoch one of the first epoch)."""
    return state_of(checkpoint)["epoch"]


def newer_in_storage(checkpoint, storage: str | None):
    """The newest complete checkpoint in this run's storage when it is newer than ``checkpoint``.

    A worker reports a checkpoint after copying it to storage, and Ray's controller learns of it only
    at its next poll: a worker that dies in between leaves a complete checkpoint Ray does not hand
    to the restarted workers, whose epoch would then be trained (and logged) again.
    """
    import ray.train

    if not storage:
        return checkpoint
    newest = latest_checkpoint(storage)
    if newest is None:
        return checkpoint
    newest_ckpt = ray.train.Checkpoint(newest)
    if checkpoint is None or progress(state_of(newest_ckpt)) > progress(state_of(checkpoint)):
        return newest_ckpt
    return checkpoint
