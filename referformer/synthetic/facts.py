"""What is true of each object of a scene: the predicates that expressions are built from.

Every predicate is three-valued: ``True`` (clearly true), ``False`` (clearly false) or ``None``
(borderline). An expression is used only when it is ``True`` for its referent and ``False`` for
every other object of the video, so no expression depends on a borderline judgement.

Ground truth used: motion from the object's centre trajectory; location from the mean centroid
of its *visible* pixels; relations from geometry (centre distances, overlaps of the unoccluded
masks, drawing depth). All lengths are in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from referformer.synthetic.scenes import DIRECTIONS, Scene, SceneObject, render_frame, shape_area, shape_extent

Truth = Optional[bool]

# (kind, value) atoms; relations carry the anchor object id as a third element.
LOCATIONS = ("left", "right", "top", "bottom", "middle")
MOTION_VALUES = ("left", "right", "up", "down", "bounce", "enter", "leave")
STATIC_VALUES = ("still", "stop")
RELATIONS = ("next_to", "passing", "behind", "in_front_of")

MOVE_MIN = 1.5  # px per frame: a step at least this long is "moving"
MOVE_EPS = 0.5  # px per frame: a step at most this long is "not moving"


def and3(values) -> Truth:
    """Kleene conjunction: False if any is False, else None if any is None, else True."""
    values = list(values)
    if any(v is False for v in values):
        return False
    if any(v is None for v in values):
        return None
    return True


def or3(values) -> Truth:
    """Kleene disjunction."""
    values = list(values)
    if any(v is True for v in values):
        return True
    if any(v is None for v in values):
        return None
    return False


def _band(value: float, true_below: float, false_above: float) -> Truth:
    """True when ``value <= true_below``, False when ``value >= false_above``, else None."""
    if value <= true_below:
        return True
    if value >= false_above:
        return False
    return None


@dataclass
class ObjectTrack:
    """Per-frame measurements of one object (``T`` frames).

    ``centres`` float ``[T, 2]`` (x, y) px; ``visible_frac`` / ``in_view_frac`` float ``[T]``:
    visible (unoccluded, in view) area and in-view area as fractions of the shape's area;
    ``visible_centroid`` float ``[T, 2]`` (NaN where invisible); ``full_masks`` bool ``[T, H, W]``.
    """

    obj: SceneObject
    centres: np.ndarray
    extent: float
    visible_frac: np.ndarray
    in_view_frac: np.ndarray
    visible_centroid: np.ndarray
    full_masks: np.ndarray

    @property
    def steps(self) -> np.ndarray:
        """Per-frame displacement, float ``[T - 1, 2]`` px."""
        return np.diff(self.centres, axis=0)


class SceneFacts:
    """Evaluates atoms on the objects of one scene (measurements are computed once)."""

    def __init__(self, scene: Scene):
        self.scene = scene
        cfg = scene.config
        self.height, self.width = cfg.height, cfg.width
        n = scene.num_frames
        frames = [render_frame(scene, t) for t in range(n)]
        yy, xx = np.mgrid[0 : self.height, 0 : self.width]
        self.tracks: dict[int, ObjectTrack] = {}
        self._memo: dict[tuple, Truth] = {}
        for obj in scene.objects:
            area = shape_area(obj.shape, obj.radius)
            vis = np.zeros(n)
            inview = np.zeros(n)
            cent = np.full((n, 2), np.nan)
            full = np.stack([frames[t][2][obj.obj_id] for t in range(n)])
            for t in range(n):
                m = frames[t][1] == obj.obj_id
                vis[t] = m.sum() / area
                inview[t] = full[t].sum() / area
                if m.any():
                    cent[t] = (xx[m].mean() + 0.5, yy[m].mean() + 0.5)
            self.tracks[obj.obj_id] = ObjectTrack(
                obj, obj.centres.astype(float), shape_extent(obj.shape, obj.radius), vis, inview, cent, full
            )

    @property
    def object_ids(self) -> list[int]:
        return [o.obj_id for o in self.scene.objects]

    # -------------------------------------------------------------------------------- atoms
    def evaluate(self, atom: tuple, obj_id: int) -> Truth:
        """Truth of ``atom`` for object ``obj_id``; atoms are ``(kind, value[, anchor_id])``."""
        key = (atom, obj_id)
        if key not in self._memo:
            self._memo[key] = self._evaluate(atom, obj_id)
        return self._memo[key]

    def _evaluate(self, atom: tuple, obj_id: int) -> Truth:
        kind, value = atom[0], atom[1]
        track = self.tracks[obj_id]
        obj = track.obj
        if kind == "category":
            return obj.shape == value
        if kind == "colour":
            return obj.colour == value
        if kind == "size":
            return obj.size_class == value
        if kind == "location":
            return self.location(track, value)
        if kind == "motion":
            return self.motion(track, value)
        if kind == "static":
            return self.static(track, value)
        if kind == "relation":
            anchor = atom[2]
            if anchor == obj_id:
                return False
            return self.relation(track, self.tracks[anchor], value)
        raise ValueError(f"unknown atom kind {kind!r}")

    def evaluate_all(self, atoms, obj_id: int) -> Truth:
        return and3(self.evaluate(a, obj_id) for a in atoms)

    # -------------------------------------------------------------------------------- location
    def location(self, track: ObjectTrack, value: str) -> Truth:
        """From the mean centroid of the visible pixels (normalised by the frame size)."""
        seen = ~np.isnan(track.visible_centroid[:, 0])
        if not seen.any():
            return None
        mx, my = track.visible_centroid[seen].mean(0) / (self.width, self.height)
        if value == "left":
            return _band(mx, 0.3, 0.42)
        if value == "right":
            return _band(-mx, -0.7, -0.58)
        if value == "top":
            return _band(my, 0.3, 0.42)
        if value == "bottom":
            return _band(-my, -0.7, -0.58)
        if value == "middle":
            off = max(abs(mx - 0.5) / 0.12, abs(my - 0.5) / 0.14)
            return _band(off, 1.0, 1.7)
        raise ValueError(f"unknown location {value!r}")

    # -------------------------------------------------------------------------------- motion
    def motion(self, track: ObjectTrack, value: str) -> Truth:
        steps = track.steps
        if value in DIRECTIONS:
            d = np.array(DIRECTIONS[value])
            along = steps @ d
            perp = np.abs(steps @ np.array([-d[1], d[0]]))
            frac = float((along > MOVE_MIN).mean())
            if frac >= 0.8 and perp.mean() <= 0.3 * along.mean():
                return True
            if frac <= 0.2:
                return False
            return None
        if value == "bounce":
            verdicts = []
            for axis in (0, 1):
                s = steps[:, axis]
                fwd, back = s > MOVE_MIN, s < -MOVE_MIN
                if fwd.sum() >= 2 and back.sum() >= 2:
                    verdicts.append(True)
                elif not ((s > MOVE_EPS).any() and (s < -MOVE_EPS).any()):
                    verdicts.append(False)
                else:
                    verdicts.append(None)
            return or3(verdicts)
        if value == "enter":
            first, last = track.in_view_frac[0], track.in_view_frac[-1]
            if first == 0.0 and last >= 0.95:
                return True
            if first >= 0.95 or last < 0.5:
                return False
            return None
        if value == "leave":
            first, last = track.in_view_frac[0], track.in_view_frac[-1]
            if last == 0.0 and first >= 0.95:
                return True
            if last >= 0.95 or first < 0.5:
                return False
            return None
        raise ValueError(f"unknown motion {value!r}")

    def static(self, track: ObjectTrack, value: str) -> Truth:
        speed = np.linalg.norm(track.steps, axis=1)
        moving, resting = speed > MOVE_MIN, speed < MOVE_EPS
        if value == "still":
            if resting.all():
                return True
            if moving.mean() >= 0.3:
                return False
            return None
        if value == "stop":
            n_move = int(np.argmin(moving)) if not moving.all() else len(moving)  # leading moving run
            if n_move >= 3 and resting[n_move:].all() and len(moving) - n_move >= 3:
                return True
            if not moving.any() or moving[-1]:
                return False
            return None
        raise ValueError(f"unknown static action {value!r}")

    # -------------------------------------------------------------------------------- relations
    def relation(self, a: ObjectTrack, b: ObjectTrack, value: str) -> Truth:
        both = (a.visible_frac > 0.05) & (b.visible_frac > 0.05)
        if value == "next_to":
            if not both.any():
                return False
            gap = np.linalg.norm(a.centres - b.centres, axis=1) - (a.extent + b.extent)
            if both.sum() >= max(3, len(both) // 2) and gap[both].max() <= 6.0:
                return True
            if np.median(gap[both]) >= 14.0:
                return False
            return None
        if value == "passing":
            if both.sum() < 3:
                return False
            d = (a.centres - b.centres)[both]
            reach = a.extent + b.extent
            verdicts = []
            for axis in (0, 1):
                along, other = d[:, axis], np.abs(d[:, 1 - axis])
                if (along > 6).any() and (along < -6).any():
                    crossed: Truth = True
                elif (along > 2).all() or (along < -2).all():
                    crossed = False
                else:
                    crossed = None
                close = _band(other.max(), 1.3 * reach, 2.0 * reach)
                verdicts.append(and3([crossed, close]))
            speed = np.linalg.norm(a.steps, axis=1).mean()
            moving = _band(-speed, -MOVE_MIN, -MOVE_EPS)  # the referent itself must move
            return and3([moving, or3(verdicts)])
        if value in ("behind", "in_front_of"):
            back, front = (a, b) if value == "behind" else (b, a)
            inter = (back.full_masks & front.full_masks).sum((1, 2))
            smaller = np.minimum(back.full_masks.sum((1, 2)), front.full_masks.sum((1, 2))).clip(min=1)
            overlap = float((inter / smaller).max())
            if back.obj.depth > front.obj.depth or overlap <= 0.02:
                return False
            if overlap >= 0.2:
                return True
            return None
        raise ValueError(f"unknown relation {value!r}")
