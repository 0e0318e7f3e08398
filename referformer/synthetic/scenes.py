"""Synthetic scenes: shapes, colours, sizes, trajectories and their rendering.

A :class:`Scene` is the ground truth of one video: a textured background and 2-5 objects, each
with a shape (the object's *category*), a colour, a size class, a motion type, a drawing depth
and a centre trajectory in **pixels** (``x`` = column, ``y`` = row, float). Rendering draws the
objects back to front with 4x super-sampled anti-aliasing, so the annotation mask (coverage >= 0.5)
matches what is visible in the JPEG.

Everything is drawn from a ``numpy.random.Generator`` passed in, so a scene is a pure function of
its seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
"""The object categories (their names are written as ``category`` in ``meta.json``)."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "green": (35, 175, 55),
    "blue": (45, 75, 235),
    "yellow": (240, 215, 25),
    "purple": (155, 55, 205),
    "orange": (250, 135, 20),
}
"""Object colours (RGB): saturated and far apart, backgrounds are muted."""

SIZE_CLASSES: tuple[str, ...] = ("small", "large")

MOTIONS: tuple[str, ...] = ("still", "left", "right", "up", "down", "stop", "bounce", "enter", "leave")
"""Motion types: still; constant motion in a direction; moves then stops; moves then turns back;
enters the frame from outside; leaves the frame."""

DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
"""Unit vectors ``(dx, dy)`` in image coordinates (y grows downwards)."""

SUPERSAMPLE = 4  # anti-aliasing factor of the rasteriser
_SHIFT = 4  # fixed-point bits for cv2.fillPoly (sub-pixel vertex precision)


@dataclass(frozen=True)
class SceneConfig:
    """Size and content options of the generated videos.

    Lengths are in pixels unless noted; ``*_frac`` values are fractions of ``min(height, width)``.
    """

    height: int = 96
    width: int = 128
    num_frames: int = 10
    min_objects: int = 2
    max_objects: int = 5
    small_size_frac: tuple[float, float] = (0.065, 0.08)  # nominal radius of small objects
    large_size_frac: tuple[float, float] = (0.13, 0.155)  # nominal radius of large objects
    speed_frac: tuple[float, float] = (0.035, 0.055)  # pixels per frame of moving objects
    motion_weights: tuple[float, ...] = (2.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 0.8, 0.8)  # per MOTIONS
    repeat_shape_prob: float = 0.75  # chance that a video has >= 2 objects of the same shape
    pair_prob: float = 0.5  # chance of a staged interaction (side by side, passing, occluding)
    jpeg_quality: int = 90
    max_tries: int = 60  # rejection-sampling attempts per scene

    def __post_init__(self) -> None:
        if self.height < 48 or self.width < 48:
            raise ValueError(f"frames must be at least 48x48 pixels, got {self.height}x{self.width}")
        if self.num_frames < 4:
            raise ValueError(f"num_frames must be >= 4 so motion is visible, got {self.num_frames}")
        if not 1 <= self.min_objects <= self.max_objects <= 8:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects <= 8, got {self.min_objects}, {self.max_objects}"
            )
        if len(self.motion_weights) != len(MOTIONS):
            raise ValueError(f"motion_weights needs {len(MOTIONS)} values, one per {MOTIONS}")


@dataclass
class SceneObject:
    """One object of a scene.

    ``centres`` is float64 ``[T, 2]`` (x, y) in pixels; ``radius`` the nominal size in pixels
    (the shape fits in a box of about ``2.4 * radius``); ``depth`` the drawing order (higher is
    drawn later, i.e. in front).
    """

    obj_id: int
    shape: str
    colour: str
    size_class: str
    radius: float
    motion: str
    centres: np.ndarray
    depth: int = 0


@dataclass
class Scene:
    """Ground truth of one video. ``background`` is uint8 ``[H, W, 3]`` RGB."""

    config: SceneConfig
    objects: list[SceneObject]
    background: np.ndarray
    noise_seed: int
    _render_cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_frames(self) -> int:
        return self.config.num_frames

    def object(self, obj_id: int) -> SceneObject:
        for obj in self.objects:
            if obj.obj_id == obj_id:
                return obj
        raise KeyError(obj_id)


# ------------------------------------------------------------------------------------------------
# Geometry and rasterisation
# ------------------------------------------------------------------------------------------------
def shape_polygon(shape: str, cx: float, cy: float, radius: float) -> np.ndarray:
    """Vertices float64 ``[N, 2]`` (x, y) in pixels of ``shape`` centred at ``(cx, cy)``."""
    r = radius
    if shape == "circle":
        a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(a), np.sin(a)], 1) * r
    elif shape == "square":
        h = 0.9 * r
        pts = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    elif shape == "triangle":
        a = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([np.cos(a), np.sin(a)], 1) * 1.25 * r + [0.0, 0.2 * r]
    elif shape == "star":
        a = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.2 * r, 0.5 * r)
        pts = np.stack([np.cos(a) * rad, np.sin(a) * rad], 1)
    elif shape == "diamond":
        pts = np.array([[0.0, -1.2 * r], [0.85 * r, 0.0], [0.0, 1.2 * r], [-0.85 * r, 0.0]])
    elif shape == "cross":
        w, e = 0.38 * r, 1.1 * r
        pts = np.array([[-w, -e], [w, -e], [w, -w], [e, -w], [e, w], [w, w], [w, e], [-w, e],
                        [-w, w], [-e, w], [-e, -w], [-w, -w]])
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return pts + np.array([cx, cy])


def shape_extent(shape: str, radius: float) -> float:
    """Largest distance in pixels from the centre to the shape's outline (for placement)."""
    return float(np.abs(shape_polygon(shape, 0.0, 0.0, radius)).max())


def shape_area(shape: str, radius: float) -> float:
    """Area in square pixels of the (unclipped) shape."""
    return float(cv2.contourArea(shape_polygon(shape, 0.0, 0.0, radius).astype(np.float32)))


def coverage(shape: str, cx: float, cy: float, radius: float, height: int, width: int) -> np.ndarray:
    """Fraction of each pixel covered by the shape: float32 ``[H, W]`` in [0, 1].

    Pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``; drawn at ``SUPERSAMPLE``x
    resolution with sub-pixel vertices and box-filtered down (cv2 has no exact polygon coverage).
    """
    s = SUPERSAMPLE
    out = np.zeros((height, width), np.float32)
    poly = shape_polygon(shape, cx, cy, radius)
    x0, y0 = np.floor(poly.min(0)).astype(int) - 1
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 1
    x0, x1 = max(x0, 0), min(x1, width)
    y0, y1 = max(y0, 0), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return out  # entirely out of view
    canvas = np.zeros(((y1 - y0) * s, (x1 - x0) * s), np.uint8)  # only the shape's bounding box
    pts = (poly - [x0, y0]) * s - 0.5  # super-sample centres at (k + 0.5) / s
    fixed = np.round(pts * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(canvas, [fixed], 255, lineType=cv2.LINE_8, shift=_SHIFT)
    out[y0:y1, x0:x1] = cv2.resize(canvas.astype(np.float32) / 255.0, (x1 - x0, y1 - y0),
                                   interpolation=cv2.INTER_AREA)
    return out


def render_frame(scene: Scene, t: int) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Draw frame ``t`` of ``scene``.

    Returns ``(rgb, labels, full_masks)``: ``rgb`` uint8 ``[H, W, 3]``; ``labels`` uint8 ``[H, W]``
    with the object id of the front-most object covering each pixel (0 = background);
    ``full_masks`` bool ``[H, W]`` per object id, the object's own mask ignoring occlusion.
    """
    cached = scene._render_cache.get(t)
    if cached is not None:
        return cached
    cfg = scene.config
    h, w = cfg.height, cfg.width
    noise = np.random.default_rng([scene.noise_seed, t]).normal(0.0, 3.0, (h, w, 3))
    img = scene.background.astype(np.float32) + noise
    labels = np.zeros((h, w), np.uint8)
    full_masks: dict[int, np.ndarray] = {}
    for obj in sorted(scene.objects, key=lambda o: o.depth):
        cx, cy = obj.centres[t]
        alpha = coverage(obj.shape, cx, cy, obj.radius, h, w)
        mask = alpha >= 0.5
        full_masks[obj.obj_id] = mask
        labels[mask] = obj.obj_id
        colour = np.array(COLOURS[obj.colour], np.float32)
        img = img * (1.0 - alpha[..., None]) + colour * alpha[..., None]
    out = (np.clip(np.round(img), 0, 255).astype(np.uint8), labels, full_masks)
    scene._render_cache[t] = out
    return out


# ------------------------------------------------------------------------------------------------
# Sampling
# ------------------------------------------------------------------------------------------------
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
