"""File readers shared by the dataset modules: JSON, images, palette PNGs, RLE, HDF5, .mat, mp4.

Every reader raises :class:`referformer.errors.DatasetFormatError` naming the file and what was
expected when a file is missing, unreadable or malformed; nothing is silently skipped.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from referformer.errors import DatasetFormatError

__all__ = [
    "require_dir",
    "require_file",
    "read_json",
    "read_pickle",
    "read_rgb",
    "read_label_png",
    "decode_rle",
    "read_a2d_h5",
    "read_jhmdb_mat",
    "VideoClip",
]


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise DatasetFormatError describing ``what``."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetFormatError(f"{path}: folder not found; expected {what}")
    return path


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise DatasetFormatError describing ``what``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found; expected {what}")
    return path


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file; a missing or malformed file raises DatasetFormatError."""
    require_file(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"{path}: not valid JSON ({err}); expected {what}") from err


def read_pickle(path: Path, what: str) -> Any:
    """Load a (Python 2 protocol) pickle such as RefCOCO's ``refs(unc).p``."""
    require_file(path, what)
    try:
        with open(path, "rb") as f:
            return pickle.load(f, fix_imports=True, encoding="latin-1")
    except Exception as err:  # pickle raises many unrelated types on corrupt input
        raise DatasetFormatError(f"{path}: cannot unpickle ({err}); expected {what}") from err


def read_rgb(path: Path) -> Image.Image:
    """Open an image file as an RGB PIL image (fully decoded, so corrupt files fail here)."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError as err:
        raise DatasetFormatError(f"{path}: frame not found") from err
    except OSError as err:
        raise DatasetFormatError(f"{path}: cannot decode image ({err})") from err


def read_label_png(path: Path) -> np.ndarray:
    """Read an object-id annotation PNG as uint8 ``[H, W]`` (pixel value = object id).

    Like the original (``Image.open(p).convert("P")``): palette PNGs are read as stored.
    """
    try:
        with Image.open(path) as im:
            return np.array(im.convert("P"))
    except FileNotFoundError as err:
        raise DatasetFormatError(f"{path}: annotation PNG not found") from err
    except OSError as err:
        raise DatasetFormatError(f"{path}: cannot decode annotation PNG ({err})") from err


def decode_rle(rle: dict, where: str) -> np.ndarray:
    """Decode a COCO RLE ``{"size": [h, w], "counts": str|bytes|list}`` to uint8 ``[H, W]`` 0/1.

    Compressed string counts (the MeViS files) go straight to pycocotools; uncompressed list
    counts are converted first (the official readers would fail on them).
    """
    from pycocotools import mask as mask_util

    try:
        size = [int(v) for v in rle["size"]]
        counts = rle["counts"]
        if isinstance(counts, list):
            obj = mask_util.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
        else:
            obj = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        return mask_util.decode(obj)
    except Exception as err:
        raise DatasetFormatError(
            f"{where}: cannot decode RLE ({err}); expected {{'size': [h, w], 'counts': str}}"
        ) from err


def read_a2d_h5(path: Path) -> tuple[list[int], np.ndarray]:
    """Read one A2D annotated frame: (instance ids, masks uint8 ``[N, H, W]``).

    The file stores ``reMask`` MATLAB-style as ``[N, W, H]`` (or ``[W, H]`` when N = 1) and
    ``instance`` as N numbers; both are transposed / flattened here. The file is opened and
    closed on every call, so it is safe in DataLoader workers.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            instances = [int(round(float(v))) for v in np.asarray(f["instance"]).reshape(-1)]
            masks = np.asarray(f["reMask"])
    except FileNotFoundError as err:
        raise DatasetFormatError(f"{path}: A2D annotation .h5 not found") from err
    except (OSError, KeyError) as err:
        raise DatasetFormatError(
            f"{path}: cannot read A2D annotation ({err}); expected HDF5 with 'reMask' and 'instance'"
        ) from err
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[0] != len(instances):
        raise DatasetFormatError(
            f"{path}: 'reMask' has shape {masks.shape}, expected [N, W, H] with N = {len(instances)}"
        )
    return instances, np.ascontiguousarray(masks.transpose(0, 2, 1))


def read_jhmdb_mat(path: Path) -> np.ndarray:
    """Read JHMDB ``puppet_mask.mat`` as uint8 ``[T_mask, H, W]`` (stored as ``part_mask [H, W, T]``)."""
    import scipy.io

    try:
        part = scipy.io.loadmat(str(path))["part_mask"]
    except FileNotFoundError as err:
        raise DatasetFormatError(f"{path}: puppet_mask.mat not found") from err
    except (KeyError, ValueError, OSError, TypeError) as err:
        raise DatasetFormatError(
            f"{path}: cannot read JHMDB mask ({err}); expected a .mat with 'part_mask' [H, W, T]"
        ) from err
    if part.ndim == 2:
        part = part[:, :, None]
    return np.ascontiguousarray(part.transpose(2, 0, 1))


class VideoClip:
    """A decoded video file (A2D ``.mp4``): decodes every frame once, converts only what is used.

    The original decodes the whole clip with ``torchvision.io.read_video`` to RGB. We decode all
    frames with PyAV too (so the frame count is exactly the number of decoded frames), but keep
    them as ``av.VideoFrame`` and convert to RGB only the frames a sample needs.
    """

    def __init__(self, path: Path) -> None:
        import av

        self.path = Path(path)
        try:
            with av.open(str(self.path)) as container:
                self._frames = list(container.decode(video=0))
        except FileNotFoundError as err:
            raise DatasetFormatError(f"{path}: video file not found") from err
        except (av.error.FFmpegError, IndexError) as err:
            raise DatasetFormatError(f"{path}: cannot decode video ({err})") from err
        if not self._frames:
            raise DatasetFormatError(f"{path}: video has no decodable frame")

    def __len__(self) -> int:
        return len(self._frames)

    def frames(self, indices: Sequence[int]) -> list[Image.Image]:
        """RGB PIL images of the 0-based frame ``indices`` (repeats allowed)."""
        cache: dict[int, Image.Image] = {}
        for i in indices:
            if i not in cache:
                cache[i] = Image.fromarray(self._frames[i].to_ndarray(format="rgb24"))
        return [cache[i] for i in indices]
