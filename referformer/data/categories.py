"""Category name -> label index tables of the original (``datasets/categories.py``).

Ref-YouTube-VOS has 65 categories (alphabetical, ``airplane`` = 0 ... ``zebra`` = 64) and
Ref-DAVIS17 78 (``airplane`` = 0 ... ``windsurf`` = 77). A2D, JHMDB and MeViS use label 0;
RefCOCO uses the COCO category ids. The labels only feed the (unused by default) class loss.
"""

from __future__ import annotations

__all__ = ["YTVOS_CATEGORIES", "DAVIS_CATEGORIES"]

_YTVOS_NAMES = (
    "airplane ape bear bike bird boat bucket bus camel cat cow crocodile deer dog dolphin duck "
    "eagle earless_seal elephant fish fox frisbee frog giant_panda giraffe hand hat hedgehog horse "
    "knife leopard lion lizard monkey motorbike mouse others owl paddle parachute parrot penguin "
    "person plant rabbit raccoon sedan shark sheep sign skateboard snail snake snowboard squirrel "
    "surfboard tennis_racket tiger toilet train truck turtle umbrella whale zebra"
).split()

_DAVIS_NAMES = [
    "airplane", "backpack", "ball", "bear", "bicycle", "bird", "boat", "bottle", "box", "bus",
    "camel", "car", "carriage", "cat", "cellphone", "chamaleon", "cow", "deer", "dog", "dolphin",
    "drone", "elephant", "excavator", "fish", "goat", "golf cart", "golf club", "grass", "guitar",
    "gun", "helicopter", "horse", "hoverboard", "kart", "key", "kite", "koala", "leash", "lion",
    "lock", "mask", "microphone", "monkey", "motorcycle", "oar", "paper", "paraglide", "person",
    "pig", "pole", "potted plant", "puck", "rack", "rhino", "rope", "sail", "scale", "scooter",
    "selfie stick", "sheep", "skateboard", "ski", "ski poles", "snake", "snowboard", "stick",
    "stroller", "surfboard", "swing", "tennis racket", "tractor", "trailer", "train", "truck",
    "turtle", "varanus", "vase", "windsurf",
]

YTVOS_CATEGORIES: dict[str, int] = {name: i for i, name in enumerate(_YTVOS_NAMES)}
DAVIS_CATEGORIES: dict[str, int] = {name: i for i, name in enumerate(_DAVIS_NAMES)}
assert len(YTVOS_CATEGORIES) == 65 and len(DAVIS_CATEGORIES) == 78
