"""RefCOCO / RefCOCO+ / RefCOCOg (DATASETS.md section 5): images and 5-frame pseudo-videos.

Reads the converted ``<root>/<name>/instances_<name>_<split>.json`` (one "image" per sentence,
written by :func:`convert_refexp` / the original ``convert_refexp_to_coco.py``) and
``<root>/train2014/<file_name>``.

* :class:`RefExpImages` (``--num_frames 1`` pre-training, ``refexp.py``): frames ``[1, 3, H, W]``;
  target ``boxes`` ``[1, 4]`` from the COCO ``bbox`` (not the mask), ``labels`` (COCO category
  id), ``masks`` ``[1, H, W]`` from the polygons, ``caption`` (stored ``sent``), ``image_id``,
  ``original_id``, ``area``, ``iscrowd``, ``valid``, ``orig_size``, ``size``, ``dataset_name``.
* :class:`RefExpClips` (joint training, ``refexp2seq.py``): the image plus T - 1 randomly warped
  copies, shuffled, as a T-frame clip through the video transforms; ``masks`` ``[T, H, W]``, boxes
  from the masks, labels repeated.

Deliberate difference: the original makes the copies with imgaug (not a dependency here and
re-seeded from the wall clock). :class:`ImageToSeqAugmenter` re-implements the same recipe with
OpenCV (brightness add U(-40, 40) and/or hue/saturation add U(-5, 5); perspective jitter 0.08;
affine translate +-10 %, rotate +-20 deg; motion blur k in {9, 11} with p 0.25); the parameters
match, the exact imgaug sampling of perspective corners does not.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from referformer.data.base import RedrawDataset, make_target
from referformer.data.io import read_json, read_pickle, read_rgb, require_dir
from referformer.errors import DatasetFormatError, UserError

__all__ = ["RefExpImages", "RefExpClips", "ImageToSeqAugmenter", "convert_refexp", "REFEXP_NAMES"]

REFEXP_NAMES = ("refcoco", "refcoco+", "refcocog")
REFS_FILES = {"refcoco": "refs(unc).p", "refcoco+": "refs(unc).p", "refcocog": "refs(umd).p"}


def polygons_to_mask(segmentation, height: int, width: int, where: str) -> np.ndarray:
    """bool ``[H, W]`` from COCO polygons (list of lists) or an RLE dict (original ``convert_coco_poly_to_mask``)."""
    from pycocotools import mask as mask_util

    try:
        if isinstance(segmentation, list):
            rles = mask_util.frPyObjects(segmentation, height, width)
        elif isinstance(segmentation.get("counts"), list):
            rles = [mask_util.frPyObjects(segmentation, height, width)]
        else:
            rles = [segmentation]
        mask = mask_util.decode(rles)
    except Exception as err:
        raise DatasetFormatError(f"{where}: bad segmentation ({err})") from err
    if mask.ndim < 3:
        mask = mask[..., None]
    return mask.any(axis=2)


class _RefExpBase(RedrawDataset):
    def __init__(self, root: Path, name: str, split: str, transforms: Callable | None) -> None:
        if name not in REFEXP_NAMES:
            raise UserError(f"unknown referring-expression dataset {name!r}; choose one of {REFEXP_NAMES}")
        self.root = require_dir(root, "the COCO root (train2014/, refcoco/, refcoco+/, refcocog/)")
        self.name = name
        self.split = split
        self.transforms = transforms
        self.ann_path = self.root / name / f"instances_{name}_{split}.json"
        data = read_json(self.ann_path, "the converted COCO json (images with 'caption', annotations)")
        try:
            anns: dict[int, list[dict]] = {}
            for a in data["annotations"]:
                anns.setdefault(a["image_id"], []).append(a)
            self.images = list(data["images"])
        except (KeyError, TypeError) as err:
            raise DatasetFormatError(f"{self.ann_path}: expected 'images' and 'annotations' lists") from err
        self.anns = anns
        self.image_dir = self.root / "train2014"

    def __len__(self) -> int:
        return len(self.images)

    def read_image_target(self, index: int):
        """The PIL image and its single-object target (xyxy pixels, T = 1)."""
        info = self.images[index]
        image = read_rgb(self.image_dir / info["file_name"])
        w, h = image.size
        objs = [a for a in self.anns.get(info["id"], []) if a.get("iscrowd", 0) == 0]
        if len(objs) != 1:
            raise DatasetFormatError(f"{self.ann_path}: image id {info['id']} needs exactly one non-crowd "
                                     f"annotation, found {len(objs)}")
        ann = objs[0]
        mask = polygons_to_mask(ann["segmentation"], h, w, f"{self.ann_path} annotation {ann['id']}")
        x, y, bw, bh = [float(v) for v in ann["bbox"]]
        box = torch.tensor([[x, y, x + bw, y + bh]], dtype=torch.float32)
        box[:, 0::2].clamp_(min=0, max=w)
        box[:, 1::2].clamp_(min=0, max=h)
        target = make_target(mask[None], [int(ann["category_id"])], info["caption"], (w, h))
        target["boxes"] = box
        target["valid"] = ((box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])).to(torch.int64)
        target.update({
            "image_id": info["id"], "original_id": info.get("original_id"),
            "area": torch.tensor([float(ann["area"])]), "iscrowd": torch.tensor([0]),
            "dataset_name": info.get("dataset_name", self.name),
            "video_id": str(info.get("original_id", info["id"])), "exp_id": str(info["id"]),
            "frame_names": [Path(info["file_name"]).stem],
            "frames_idx": torch.zeros(1, dtype=torch.int64),
        })
        return image, target


class RefExpImages(_RefExpBase):
    """One image per sentence, T = 1 (pre-training and RefCOCO validation)."""

    def __init__(self, root: Path, name: str = "refcoco", split: str = "train",
                 transforms: Callable | None = None) -> None:
        super().__init__(root, name, split, transforms)
        self.redraw_invalid = split == "train"

    def load(self, index: int):
        image, target = self.read_image_target(index)
        if self.transforms is not None:
            return self.transforms([image], target)
        return [image], target


class ImageToSeqAugmenter:
    """Make a warped copy of an image and its masks (replacement of the original imgaug recipe).

    ``__call__(image uint8 [H, W, 3], masks bool [N, H, W]) -> (image, masks)``; colour change
    (one or both of brightness +U(-40, 40), hue/saturation +U(-5, 5)), one homography made of a
    perspective jitter (corner offsets ~ N(0, 0.08) x size) and an affine map (translate
    +-10 %, rotate +-20 deg about the centre; bilinear for the image, nearest for the masks),
    then motion blur (kernel 9 or 11, random angle) with probability 0.25. Uses numpy's global RNG.
    """

    def __init__(self, perspective: float = 0.08, translate: float = 0.1, rotate: float = 20.0,
                 brightness: float = 40.0, hue_saturation: float = 5.0, motion_blur_p: float = 0.25) -> None:
        self.perspective, self.translate, self.rotate = perspective, translate, rotate
        self.brightness, self.hue_saturation, self.motion_blur_p = brightness, hue_saturation, motion_blur_p

    def _colour(self, img: np.ndarray) -> np.ndarray:
        which = [[True, False], [False, True], [True, True]][np.random.randint(3)]
        out = img.astype(np.float32)
        if which[0]:
            out = out + np.random.uniform(-self.brightness, self.brightness)
        if which[1]:
            hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
            hsv[..., 0] = np.mod(hsv[..., 0] + np.random.uniform(-self.hue_saturation, self.hue_saturation), 180)
            hsv[..., 1] += np.random.uniform(-self.hue_saturation, self.hue_saturation)
            out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
        return np.clip(out, 0, 255).astype(np.uint8)

    def _homography(self, h: int, w: int) -> np.ndarray:
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        jitter = np.abs(np.random.normal(0, self.perspective, size=(4, 2))) * np.float32([w, h])
        inward = np.float32([[1, 1], [-1, 1], [-1, -1], [1, -1]])
        persp = cv2.getPerspectiveTransform(src, (src + inward * jitter).astype(np.float32))
        angle = np.random.uniform(-self.rotate, self.rotate)
        tx = np.random.uniform(-self.translate, self.translate) * w
        ty = np.random.uniform(-self.translate, self.translate) * h
        affine = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), [0, 0, 1]])
        affine[0, 2] += tx
        affine[1, 2] += ty
        return affine @ persp

    def _motion_blur(self, img: np.ndarray) -> np.ndarray:
        k = int(np.random.choice([9, 11]))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), np.random.uniform(0, 360), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        kernel /= max(kernel.sum(), 1e-6)
        return cv2.filter2D(img, -1, kernel)

    def __call__(self, image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        img = self._colour(image)
        hom = self._homography(h, w)
        img = cv2.warpPerspective(img, hom, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        out_masks = np.stack([
            cv2.warpPerspective(m.astype(np.uint8), hom, (w, h), flags=cv2.INTER_NEAREST) > 0 for m in masks
        ])
        if np.random.rand() < self.motion_blur_p:
            img = self._motion_blur(img)
        return img, out_masks


class RefExpClips(_RefExpBase):
    """RefCOCO images as T-frame pseudo-videos for joint training (``refexp2seq.py``)."""

    def __init__(self, root: Path, name: str = "refcoco", split: str = "train",
                 transforms: Callable | None = None, num_frames: int = 5,
                 augmenter: ImageToSeqAugmenter | None = None) -> None:
        super().__init__(root, name, split, transforms)
        self.num_frames = num_frames
        self.augmenter = augmenter or ImageToSeqAugmenter()

    def load(self, index: int):
        from PIL import Image

        image, base = self.read_image_target(index)
        array = np.asarray(image)
        mask0 = base["masks"].numpy()
        frames, masks = [image], [mask0]
        for _ in range(self.num_frames - 1):
            img_t, masks_t = self.augmenter(array, mask0)
            frames.append(Image.fromarray(img_t))
            masks.append(masks_t)
        order = list(range(self.num_frames))
        random.shuffle(order)
        frames = [frames[i] for i in order]
        clip_masks = np.concatenate([masks[i] for i in order])  # [T, H, W]
        w, h = image.size
        target = make_target(clip_masks, base["labels"].tolist() * self.num_frames, base["caption"], (w, h))
        target["boxes"] = target["boxes"].clamp(min=1e-6)  # as the original masks_to_boxes
        for key in ("image_id", "original_id", "dataset_name", "video_id", "exp_id"):
            target[key] = base[key]
        target["frame_names"] = base["frame_names"] * self.num_frames
        target["frames_idx"] = torch.as_tensor(order, dtype=torch.int64)
        if self.transforms is not None:
            return self.transforms(frames, target)
        return frames, target


def convert_refexp(root: Path, name: str) -> dict[str, int]:
    """Write ``<root>/<name>/instances_<name>_<split>.json`` from ``refs(...).p`` + ``instances.json``.

    The original ``convert_refexp_to_coco.py``: refs in pickle order, one image per sentence with a
    running id per file, ``caption`` = ``sentence["sent"]``. Returns the number of samples per split.
    """
    import json

    ddir = require_dir(Path(root) / name, f"the {name} folder (refs pickle + instances.json)")
    refs = read_pickle(ddir / REFS_FILES[name], "a list of ref dicts")
    instances = read_json(ddir / "instances.json", "the COCO instances json")
    imgs = {im["id"]: im for im in instances["images"]}
    anns = {a["id"]: a for a in instances["annotations"]}
    splits: dict[str, list] = {}
    for ref in refs:
        splits.setdefault(ref["split"], []).append(ref)
    counts = {}
    for split, split_refs in splits.items():
        out = {"info": instances["info"], "licenses": instances["licenses"], "images": [], "annotations": [],
               "categories": instances["categories"]}
        k = 0
        for ref in split_refs:
            img, ann = imgs[ref["image_id"]], anns[ref["ann_id"]]
            for s in ref["sentences"]:
                k += 1
                out["images"].append({"file_name": img["file_name"], "height": img["height"], "width": img["width"],
                                      "original_id": img["id"], "id": k, "caption": s["sent"], "dataset_name": name})
                out["annotations"].append({"segmentation": ann["segmentation"], "area": ann["area"],
                                           "iscrowd": ann["iscrowd"], "bbox": ann["bbox"], "image_id": k,
                                           "category_id": ann["category_id"], "id": k, "original_id": ann["id"]})
        (ddir / f"instances_{name}_{split}.json").write_text(json.dumps(out))
        counts[split] = k
    return counts
