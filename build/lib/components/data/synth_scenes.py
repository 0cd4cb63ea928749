"""Scene renderers for `vidpeft synth`: one function per task kind, each (rng, label, ...) -> clip.

Every renderer returns uint8 (T, H, W, 3) frames, a speed in pixels per frame (0 for static clips)
and a caption in words (colour, shape, motion), so one generated set serves classification,
regression and caption-driven (M2-CLIP) recipes alike.

Task kinds (see `TASKS`):
- ``motion``: 2-4 bright shapes on a textured background, all moving one way on an open plane
  (entering and leaving the frame); class = direction. Hard: no single frame tells the class.
- ``appearance``: the *source* task of the demo. One white shape on a near-black background, static,
  at a random position; class = shape x size. Nothing moves, so a backbone trained on it learns
  what things look like, not where they go.
- ``motion_texture``: the *target* task. One or two coloured shapes that cross the middle of a
  textured frame together; class = direction, regression target = speed. It differs from the source
  in appearance (colour on texture) and needs temporal modelling (any one frame is ambiguous).
- ``compositions``: the M2-CLIP demo's captioned task. One shape crossing a textured frame; class =
  colour x shape x direction, named in words ("red disc moving left", 4 x 2 x 4 = 32 classes), so
  class names are captions and a held-out subset of compositions tests zero-shot recognition
  (``held_out_compositions``).
"""

from __future__ import annotations

import math

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (235, 60, 50), "green": (60, 220, 80), "blue": (70, 110, 245),
    "yellow": (240, 225, 60), "cyan": (60, 225, 235), "magenta": (235, 70, 225),
}
SHAPES = ("disc", "square")
APPEARANCE_CLASSES = ("small_disc", "large_disc", "small_square", "large_square")


def direction_name(label: int, num_classes: int) -> str:
    return f"dir_{round(360 * label / num_classes)}deg"


def _direction_words(angle: float) -> str:
    """Compass words for an angle measured from +x (right) with y pointing down."""
    names = ("right", "down-right", "down", "down-left", "left", "up-left", "up", "up-right")
    return names[round(angle / (math.pi / 4)) % 8]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:size, 0:size].astype(np.float32)  # (H, W) each


def _shape_mask(yy: np.ndarray, xx: np.ndarray, square: bool, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    return np.maximum(abs(dy), abs(dx)) <= r if square else dy * dy + dx * dx <= r * r


def background(rng: np.random.Generator, size: int, contrast: float = 1.0) -> np.ndarray:
    """Static texture: a coarse random colour grid (blocky low frequencies) + fine noise."""
    cells = int(rng.integers(4, 9))
    # Darker than every shape (shapes are >= 170 per channel): motion then changes pixels with a
    # consistent sign, so even a linear read-out of frame differences can tell the direction.
    coarse = rng.integers(30, 131, size=(cells, cells, 3)).astype(np.float32)
    coarse = 80.0 + (coarse - 80.0) * contrast
    rep = -(-size // cells)  # ceil division
    bg = np.repeat(np.repeat(coarse, rep, axis=0), rep, axis=1)[:size, :size]  # (H, W, 3)
    bg += rng.normal(0.0, 12.0 * contrast, size=(size, size, 3)).astype(np.float32)
    return bg


def render_motion(rng: np.random.Generator, label: int, num_classes: int, frames: int, size: int,
                  shapes: tuple[int, int] = (2, 4), contrast: float = 1.0) -> tuple[np.ndarray, float, str]:
    """Task ``motion``: several shapes on an open plane, entering and leaving the frame."""
    bg = background(rng, size, contrast)
    angle = 2 * math.pi * label / num_classes + rng.uniform(-1, 1) * math.pi / (4 * num_classes)
    # About 60% of the frame per clip: fast enough to see between sampled frames, slow enough
    # that a shape does not wrap all the way round (which would hide the direction from any
    # position-over-time readout).
    speed = float(rng.uniform(0.75, 1.25)) * max(1.5, 0.6 * size / frames)
    vel = np.array([math.sin(angle), math.cos(angle)]) * speed  # (dy, dx); y points down

    n_shapes = int(rng.integers(shapes[0], shapes[1] + 1))
    # Shapes travel on an open plane (no wrap-around, which would make a rightward shape jump
    # left). Mid-clip centres are uniform over the frame widened by half the travel, so shapes
    # enter and leave and any single frame shows them anywhere, whatever the direction.
    travel = speed * (frames - 1)
    centres = rng.uniform(-travel / 2, size + travel / 2, size=(n_shapes, 2))
    radii = rng.uniform(size / 12, size / 6, size=n_shapes)
    squares = rng.random(n_shapes) < 0.5
    colours = rng.integers(170, 256, size=(n_shapes, 3)).astype(np.float32)  # brighter than the background

    yy, xx = _grid(size)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)  # (T, H, W, C)
    for t in range(frames):
        img = bg.copy()
        for c, r, sq, col in zip(centres + vel * (t - (frames - 1) / 2), radii, squares, colours):
            img[_shape_mask(yy, xx, sq, c[0], c[1], r)] = col
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out, speed, f"{n_shapes} bright shapes moving {_direction_words(angle)}"


def render_appearance(rng: np.random.Generator, label: int, num_classes: int, frames: int, size: int,
                      **_: object) -> tuple[np.ndarray, float, str]:
    """Task ``appearance``: class = shape (disc/square) x size (small/large); white on black, static."""
    square, large = bool(label // 2), bool(label % 2)
    unit = size / 32  # radii below are for 32-pixel frames
    r = rng.uniform(5.0, 7.0) * unit if large else rng.uniform(2.0, 3.5) * unit
    cy, cx = rng.uniform(r, size - r, size=2)
    img = rng.normal(10.0, 8.0, size=(size, size, 3)).astype(np.float32)
    yy, xx = _grid(size)
    img[_shape_mask(yy, xx, square, cy, cx, r)] = float(rng.integers(200, 256))
    frame = np.clip(img, 0, 255).astype(np.uint8)
    caption = f"a {'large' if large else 'small'} white {SHAPES[int(square)]}"
    return np.repeat(frame[None], frames, axis=0), 0.0, caption  # (T, H, W, C), static


def render_motion_texture(rng: np.random.Generator, label: int, num_classes: int, frames: int, size: int,
                          shapes: tuple[int, int] = (1, 2), contrast: float = 1.0) -> tuple[np.ndarray, float, str]:
    """Task ``motion_texture``: 1-2 coloured shapes crossing the middle of a textured frame together."""
    bg = background(rng, size, contrast)
    angle = 2 * math.pi * label / num_classes + rng.uniform(-1, 1) * math.pi / (4 * num_classes)
    travel = rng.uniform(0.4, 0.6) * size  # the whole path stays inside the frame
    speed = float(travel / (frames - 1))
    vel = np.array([math.sin(angle), math.cos(angle)]) * speed  # (dy, dx); y points down
    unit = size / 32
    n = int(rng.integers(shapes[0], shapes[1] + 1))
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    square = bool(rng.integers(2))
    radii = rng.uniform(3.0, 5.0, size=n) * unit
    mids = rng.uniform(size / 2 - 6 * unit, size / 2 + 6 * unit, size=(n, 2))  # clip-middle centres
    yy, xx = _grid(size)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)  # (T, H, W, C)
    for t in range(frames):
        img = bg.copy()
        for mid, r in zip(mids, radii):
            c = mid + vel * (t - (frames - 1) / 2)
            img[_shape_mask(yy, xx, square, c[0], c[1], r)] = COLOURS[colour]
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    pace = "fast" if travel > 0.5 * size else "slowly"
    what = f"a {colour} {SHAPES[int(square)]}" if n == 1 else f"two {colour} {SHAPES[int(square)]}s"
    return out, speed, f"{what} moving {_direction_words(angle)} {pace}"


COMPOSITION_COLOURS = ("red", "green", "blue", "yellow")
COMPOSITION_DIRECTIONS = ("right", "down", "left", "up")  # angle 90 deg x index, y pointing down


def composition_names() -> list[str]:
    """Class names of the ``compositions`` task, label order colour-major, then shape, then direction."""
    return [f"{c} {s} moving {d}" for c in COMPOSITION_COLOURS for s in SHAPES for d in COMPOSITION_DIRECTIONS]


def held_out_compositions() -> list[int]:
    """Labels of the 8 compositions the M2-CLIP demo holds out: one direction per (colour, shape),
    chosen so every colour-shape, colour-direction and shape-direction pair still occurs among the 24
    training compositions (only the triples are new)."""
    nc, ns, nd = len(COMPOSITION_COLOURS), len(SHAPES), len(COMPOSITION_DIRECTIONS)
    return [(c * ns + s) * nd + d for c in range(nc) for s in range(ns) for d in range(nd) if (c + s + d) % nd == 0]


def render_compositions(rng: np.random.Generator, label: int, num_classes: int, frames: int, size: int,
                        contrast: float = 1.0, **_: object) -> tuple[np.ndarray, float, str]:
    """Task ``compositions``: one shape of the label's colour and kind crossing the frame its way."""
    ns, nd = len(SHAPES), len(COMPOSITION_DIRECTIONS)
    colour, square, direction = COMPOSITION_COLOURS[label // (ns * nd)], bool(label // nd % ns), label % nd
    bg = background(rng, size, contrast)
    angle = direction * math.pi / 2 + rng.uniform(-1, 1) * math.pi / 16
    travel = rng.uniform(0.4, 0.6) * size  # the whole path stays inside the frame
    vel = np.array([math.sin(angle), math.cos(angle)]) * travel / (frames - 1)  # (dy, dx) per frame
    unit = size / 32
    r = rng.uniform(6.0, 8.0) * unit  # large enough that a disc and a square differ at 8-pixel patches
    mid = rng.uniform(size / 2 - 3 * unit, size / 2 + 3 * unit, size=2)  # clip-middle centre
    yy, xx = _grid(size)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)  # (T, H, W, C)
    for t in range(frames):
        img = bg.copy()
        c = mid + vel * (t - (frames - 1) / 2)
        img[_shape_mask(yy, xx, square, c[0], c[1], r)] = COLOURS[colour]
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    caption = f"a {colour} {SHAPES[int(square)]} moving {COMPOSITION_DIRECTIONS[direction]}"
    return out, float(travel / (frames - 1)), caption


# task kind -> (renderer, class names for num_classes, default shapes range)
TASKS = {
    "motion": (render_motion, lambda k: [direction_name(i, k) for i in range(k)], (2, 4)),
    "appearance": (render_appearance, lambda k: list(APPEARANCE_CLASSES), (1, 1)),
    "motion_texture": (render_motion_texture, lambda k: [direction_name(i, k) for i in range(k)], (1, 2)),
    "compositions": (render_compositions, lambda k: composition_names(), (1, 1)),
}
