"""Synthetic scenes: shapes, colours, sizes, motion types and the rendering of a scene.

A :class:`Scene` is the ground truth of one video: a textured background and 2-5 objects, each
with a shape (the object's *category*), a colour, a size class, a motion type, a drawing depth
and a centre trajectory in **pixels** (``x`` = column, ``y`` = row, float). Rendering draws the
objects back to front with 4x super-sampled anti-aliasing, so the annotation mask (coverage >= 0.5)
matches what is visible in the JPEG.

Scenes are drawn at random by :func:`referformer.synthetic.sampling.sample_scene`.
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
