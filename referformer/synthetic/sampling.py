"""Drawing random synthetic scenes: backgrounds, objects, trajectories and staged interactions.

Everything is drawn from a ``numpy.random.Generator`` passed in, so a scene is a pure function of
its seed. What a scene is and how it is rendered is :mod:`referformer.synthetic.scenes`.
"""

from __future__ import annotations

import cv2
import numpy as np

from referformer.synthetic.scenes import (
    COLOURS,
    DIRECTIONS,
    MOTIONS,
    SHAPES,
    SIZE_CLASSES,
    Scene,
    SceneConfig,
    SceneObject,
    render_frame,
    shape_area,
    shape_extent,
)

__all__ = ["sample_background", "sample_scene"]


def sample_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A muted textured background, uint8 ``[H, W, 3]``: smooth noise, stripes or a checkerboard."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 60), rng.uniform(90, 170)]]], np.float32)
    base = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)[0, 0]
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:  # smooth noise
        grid = rng.normal(0.0, 1.0, (4 + rng.integers(4), 5 + rng.integers(4))).astype(np.float32)
        tex = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC) * 18.0
    elif kind == 1:  # stripes
        angle, period = rng.uniform(0, np.pi), rng.uniform(8, 20)
        tex = 14.0 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    else:  # checkerboard
        cell = int(rng.integers(8, 17))
        tex = 12.0 * (((yy // cell + xx // cell) % 2) * 2 - 1)
    img = base[None, None, :] + tex[..., None] + rng.normal(0.0, 4.0, (height, width, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _uniform(rng: np.random.Generator, lo, hi) -> np.ndarray:
    """``rng.uniform(lo, hi)`` element-wise, taking the midpoint where the range is empty."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    value = rng.uniform(np.minimum(lo, hi), np.maximum(lo, hi))
    return np.where(hi > lo, value, (lo + hi) / 2)


def _trajectory(rng: np.random.Generator, motion: str, extent: float, speed: float,
                cfg: SceneConfig) -> np.ndarray:
    """Centres float64 ``[T, 2]`` (x, y) for one motion type, keeping the object in view
    except where the motion is about entering or leaving."""
    n, w, h = cfg.num_frames, cfg.width, cfg.height
    steps = n - 1
    margin = extent + 1.0
    lo = np.array([margin, margin])
    hi = np.array([w - margin, h - margin])
    if motion == "still":
        return np.repeat(_uniform(rng, lo, hi)[None], n, 0)
    if motion in DIRECTIONS:
        d = np.array(DIRECTIONS[motion])
        axis = 0 if d[0] != 0 else 1
        speed = min(speed, 0.95 * (hi[axis] - lo[axis]) / steps)
        start = _uniform(rng, lo, hi)
        travel = speed * steps
        start[axis] = _uniform(rng, lo[axis], hi[axis] - travel)
        if d[axis] < 0:
            start[axis] += travel
        return start[None] + d[None] * speed * np.arange(n)[:, None]
    if motion in ("stop", "bounce"):
        name = str(rng.choice(list(DIRECTIONS)))
        d = np.array(DIRECTIONS[name])
        axis = 0 if d[0] != 0 else 1
        k_lo = max(2, round(steps * 0.4))
        k = int(rng.integers(k_lo, max(k_lo, min(steps - 2, round(steps * 0.6))) + 1))
        speed = min(speed, 0.95 * (hi[axis] - lo[axis]) / k)
        offsets = np.zeros(n)
        for t in range(1, n):
            moving_forward = t <= k
            if motion == "stop":
                offsets[t] = offsets[t - 1] + (speed if moving_forward else 0.0)
            else:
                offsets[t] = offsets[t - 1] + (speed if moving_forward else -speed)
        start = _uniform(rng, lo, hi)
        span_lo, span_hi = offsets.min(), offsets.max()
        s = d[axis]
        # position along the axis = start + s * offset must stay inside [lo, hi]
        a_min = lo[axis] - s * (span_lo if s > 0 else span_hi)
        a_max = hi[axis] - s * (span_hi if s > 0 else span_lo)
        start[axis] = _uniform(rng, a_min, a_max)
        return start[None] + d[None] * offsets[:, None]
    if motion in ("enter", "leave"):
        name = str(rng.choice(list(DIRECTIONS)))  # direction of travel
        d = np.array(DIRECTIONS[name])
        axis = 0 if d[0] != 0 else 1
        size = (w, h)[axis]
        outside = -(extent + 1.0)  # centre coordinate at which the shape is fully out (low side)
        inside = margin + float(_uniform(rng, 0.0, 0.15 * size))  # fully in view
        speed = max(speed, (inside - outside) / (steps - 1))
        travel = speed * steps
        start = _uniform(rng, lo, hi)
        if motion == "enter":  # fully outside at t = 0, travelling inwards
            a0 = outside
        else:  # leave: fully in view at t = 0, fully outside at the end
            a0 = outside + travel
            a0 = max(a0, inside)
            speed = (a0 - outside) / steps
        along = a0 + speed * np.arange(n) * (1 if motion == "enter" else -1)
        # the above is for an object entering/leaving through the low side (x = 0 or y = 0);
        # mirror it for the high side so that the travel direction is ``d``
        going_up = d[axis] > 0
        if motion == "enter" and not going_up:
            along = size - along
        if motion == "leave" and going_up:
            along = size - along
        centres = np.repeat(start[None], n, 0)
        centres[:, axis] = along
        return centres
    raise ValueError(f"unknown motion {motion!r}; expected one of {MOTIONS}")


def _sample_objects(rng: np.random.Generator, cfg: SceneConfig) -> list[SceneObject]:
    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    shapes = list(rng.choice(SHAPES, size=n_obj, replace=n_obj > len(SHAPES)))
    if n_obj >= 2 and rng.random() < cfg.repeat_shape_prob:
        shapes[1] = shapes[0]  # make the category alone ambiguous for some objects
    rng.shuffle(shapes)
    colours = list(COLOURS)
    weights = np.array(cfg.motion_weights, float)
    base = min(cfg.height, cfg.width)
    objects: list[SceneObject] = []
    used: set[tuple[str, str, str]] = set()
    for i, shape in enumerate(shapes):
        size_class = str(rng.choice(SIZE_CLASSES))
        colour = str(rng.choice(colours))
        while (str(shape), colour, size_class) in used:  # twins differ at least in colour or size
            colour = str(rng.choice(colours))
        used.add((str(shape), colour, size_class))
        frac = cfg.small_size_frac if size_class == "small" else cfg.large_size_frac
        radius = float(rng.uniform(*frac) * base)
        motion = str(rng.choice(MOTIONS, p=weights / weights.sum()))
        speed = float(rng.uniform(*cfg.speed_frac) * base)
        centres = _trajectory(rng, motion, shape_extent(str(shape), radius), speed, cfg)
        objects.append(SceneObject(i + 1, str(shape), colour, size_class, radius, motion, centres))
    if n_obj >= 2 and rng.random() < cfg.pair_prob:
        _stage_pair(rng, objects, cfg)
    depths = rng.permutation(n_obj)
    for obj, depth in zip(objects, depths):
        obj.depth = int(depth)
    return objects


def _stage_pair(rng: np.random.Generator, objects: list[SceneObject], cfg: SceneConfig) -> None:
    """Re-place object 2 relative to object 1: side by side (still or moving together), or on a
    path that crosses object 1 (passing it closely, or overlapping it so one occludes the other)."""
    a, b = objects[0], objects[1]
    ea, eb = shape_extent(a.shape, a.radius), shape_extent(b.shape, b.radius)
    mode = str(rng.choice(["together", "pass", "overlap"]))
    n = cfg.num_frames
    if mode == "together":
        gap = ea + eb + rng.uniform(1.0, 3.0)
        side = np.array(DIRECTIONS[str(rng.choice(list(DIRECTIONS)))])
        b.centres = a.centres + side[None] * gap
        b.motion = a.motion
        return
    # a crossing path: b moves horizontally or vertically through a's mean position
    centre = a.centres.mean(0)
    axis = int(rng.integers(2))
    offset = rng.uniform(0.0, 0.3) * (ea + eb) if mode == "overlap" else (ea + eb) + rng.uniform(2.0, 5.0)
    offset *= rng.choice([-1.0, 1.0])
    speed = rng.uniform(*cfg.speed_frac) * min(cfg.height, cfg.width)
    sign = rng.choice([-1.0, 1.0])
    along = centre[axis] + sign * (np.arange(n) - (n - 1) / 2) * speed
    centres = np.zeros((n, 2))
    centres[:, axis] = along
    centres[:, 1 - axis] = centre[1 - axis] + offset
    b.centres = centres
    names = {(0, 1.0): "right", (0, -1.0): "left", (1, 1.0): "down", (1, -1.0): "up"}
    b.motion = names[(axis, float(sign))]


def _acceptable(scene: Scene) -> bool:
    """Reject scenes where an object is hardly ever visible (hidden or mostly out of view)."""
    n = scene.num_frames
    for obj in scene.objects:
        area = shape_area(obj.shape, obj.radius)
        visible = np.array([(render_frame(scene, t)[1] == obj.obj_id).sum() / area for t in range(n)])
        if (visible > 0.05).sum() < max(3, int(0.4 * n)) or visible.max() < 0.6:
            return False
    return True


def sample_scene(rng: np.random.Generator, config: SceneConfig) -> Scene:
    """Draw one scene (rejection-sampled until every object is visible often enough)."""
    scene = None
    for _ in range(config.max_tries):
        objects = _sample_objects(rng, config)
        background = sample_background(rng, config.height, config.width)
        scene = Scene(config, objects, background, noise_seed=int(rng.integers(2**31)))
        if _acceptable(scene):
            return scene
    assert scene is not None
    return scene
