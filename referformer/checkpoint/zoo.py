"""The published ReferFormer checkpoints: where each lives and what it scored (the official model zoo).

One :class:`PublishedCheckpoint` per "Model" / "weight" link of the original README, with its Google
Drive file id, the preset that gives its architecture, its official numbers (for ``referformer
presets`` and the model card) and the inference settings it was evaluated with. No sha256 was ever
published: a download is verified by loading it (every key and shape of the preset) and the sha256
seen is recorded in the cache manifest (:mod:`.cache`).

:func:`register_published` adds a name (tests, private mirrors of other checkpoints).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from referformer.checkpoint.settings import ORIGINAL_SETTINGS, InferenceSettings
from referformer.errors import UserError
from referformer.presets import PRESETS, get_preset

DRIVE_VIEW_URL = "https://drive.google.com/file/d/{id}/view"

# Parameters of the release architecture per backbone (``params_summary.tsv`` of the reference
# specs; shared tensors counted once): float32 weights take 4 bytes each.
RELEASE_PARAMS = {
    "resnet50": 176_262_207, "resnet101": 195_202_111, "swin_t_p4w7": 176_764_473,
    "swin_s_p4w7": 198_082_377, "swin_b_p4w7": 236_701_495, "swin_l_p4w7": 346_380_051,
    "video_swin_t_p4w7": 177_088_101, "video_swin_s_p4w7": 198_746_709, "video_swin_b_p4w7": 237_587_271,
}


@dataclass(frozen=True)
class PublishedCheckpoint:
    """One downloadable checkpoint.

    Attributes:
        name: what users type (``load_model("ytvos-r50")``, ``--checkpoint ytvos-r50``).
        drive_id: Google Drive file id of the official ``.pth`` (also its name on a
            ``REFERFORMER_MIRROR``).
        preset: the preset whose architecture the file must match exactly.
        backbone: readable backbone (``ResNet-50``).
        dataset: what it was trained for (``ref-youtube-vos``, ``a2d-sentences``, ``refcoco``).
        results: the official numbers, ``{"Ref-YouTube-VOS J&F": 55.6, ...}`` (percent).
        inference: the settings it was evaluated with (stored in the converted ``config.json``).
        sha256: expected sha256 of the download, when known (never for the official files).
        config: architecture override (a ``ModelConfig``) for names whose architecture is no preset
            (tests); None: the preset's.
        note: one line shown by ``referformer presets``.
    """

    name: str
    drive_id: str
    preset: str
    backbone: str
    dataset: str
    results: dict[str, float] = field(default_factory=dict)
    inference: InferenceSettings = ORIGINAL_SETTINGS
    sha256: str | None = None
    config: Any = None
    note: str = ""

    @property
    def source_url(self) -> str:
        """The Google Drive page of the file."""
        return DRIVE_VIEW_URL.format(id=self.drive_id)

    @property
    def official_file(self) -> str:
        """File name of the official download (the preset's, else ``<name>.pth``)."""
        preset = PRESETS.get(self.preset)
        return preset.official_file if preset is not None and preset.official_file else f"{self.name}.pth"

    def model_config(self) -> Any:
        """The architecture the file must match: ``config``, else the preset's."""
        return self.config.replace() if self.config is not None else get_preset(self.preset).config

    def approx_bytes(self) -> int | None:
        """Size of the float32 weights (the converted ``model.safetensors``), when the backbone is known."""
        params = RELEASE_PARAMS.get(self.model_config().backbone)
        return None if params is None else params * 4

    def results_line(self) -> str:
        """``"Ref-YouTube-VOS J&F 55.6; Ref-DAVIS17 J&F 58.5"`` (grouped by benchmark, the first word of
        each key; empty when none were published)."""
        groups: dict[str, list[str]] = {}
        for key, value in self.results.items():
            benchmark, _, metric = key.partition(" ")
            groups.setdefault(benchmark, []).append(f"{metric} {value:.1f}")
        return "; ".join(f"{benchmark} {', '.join(metrics)}" for benchmark, metrics in groups.items())


_CAPPED_640 = dataclasses.replace(ORIGINAL_SETTINGS, max_size=640)  # A2D, RefCOCO: RandomResize([360], max_size=640)
_BACKBONES = {"r50": ("resnet50", "ResNet-50"), "r101": ("resnet101", "ResNet-101"),
              "swin-t": ("swin_t_p4w7", "Swin-T"), "swin-l": ("swin_l_p4w7", "Swin-L"),
              "video-swin-t": ("video_swin_t_p4w7", "Video-Swin-T"),
              "video-swin-s": ("video_swin_s_p4w7", "Video-Swin-S"),
              "video-swin-b": ("video_swin_b_p4w7", "Video-Swin-B")}


def _entry(name: str, short: str, drive_id: str, dataset: str, results: dict[str, float],
           inference: InferenceSettings = ORIGINAL_SETTINGS, note: str = "") -> PublishedCheckpoint:
    backbone, label = _BACKBONES[short]
    # a model-zoo preset of the same name when there is one, else the generic release architecture
    preset = name if name in PRESETS else f"{backbone}-release"
    return PublishedCheckpoint(name, drive_id, preset, label, dataset, results, inference, note=note)


def _ytvos(j_f: float, davis: float | None = None) -> dict[str, float]:
    return {"Ref-YouTube-VOS J&F": j_f, **({"Ref-DAVIS17 J&F": davis} if davis is not None else {})}


def _joint(j_f: float, j: float, f: float) -> dict[str, float]:
    return {"Ref-YouTube-VOS J&F": j_f, "Ref-YouTube-VOS J": j, "Ref-YouTube-VOS F": f}


def _a2d(overall: float, mean: float, m_ap: float, jhmdb: tuple[float, float, float] | None = None) -> dict[str, float]:
    out = {"A2D Overall IoU": overall, "A2D Mean IoU": mean, "A2D mAP": m_ap}
    if jhmdb is not None:
        out.update({"JHMDB Overall IoU": jhmdb[0], "JHMDB Mean IoU": jhmdb[1], "JHMDB mAP": jhmdb[2]})
    return out


def _refcoco(rec: tuple[float, float, float], ris: tuple[float, float, float]) -> dict[str, float]:
    names = ("RefCOCO", "RefCOCO+", "RefCOCOg")
    return {**{f"{n} REC P@0.5": v for n, v in zip(names, rec)}, **{f"{n} RIS oIoU": v for n, v in zip(names, ris)}}


_YT, _A2D, _COCO = "ref-youtube-vos", "a2d-sentences", "refcoco"
_ZOO = [
    # Ref-YouTube-VOS (RefCOCO/+/g pre-training, then Ref-YouTube-VOS); also the Ref-DAVIS17 models
    _entry("ytvos-r50", "r50", "1TBykzTRiOEbpM2YEYnDICyqjwkvlD2cR", _YT, _ytvos(55.6, 58.5)),
    _entry("ytvos-r101", "r101", "1QJU8HC8xk_3gMcj-Yi4vkUHaeHeP8n82", _YT, _ytvos(57.3)),
    _entry("ytvos-swin-t", "swin-t", "1AOHK6Qp8T0rUzgHT9twvWn4oGLS5MnuS", _YT, _ytvos(58.7)),
    _entry("ytvos-swin-l", "swin-l", "103N96BbQnT9P57aGx7TCsZVyGr3ejFdl", _YT, _ytvos(62.4, 60.5)),
    _entry("ytvos-video-swin-t-scratch", "video-swin-t", "14X_YysCXv13LzLoWy9ViIn623KQ-ol51", _YT, _ytvos(56.0),
           note="no RefCOCO pre-training"),
    _entry("ytvos-video-swin-t", "video-swin-t", "1vkG8nyUue9XOnScUMKo__khhxvuJP9R6", _YT, _ytvos(59.4)),
    _entry("ytvos-video-swin-s", "video-swin-s", "1R0C5hYck6OwKko9tXOpIQ02SuE4mb1xj", _YT, _ytvos(60.1)),
    _entry("ytvos-video-swin-b", "video-swin-b", "1_dS8hyZJFdijvsDVmoVcHjWhRE6sAXvS", _YT, _ytvos(62.9, 61.1)),
    # joint training (Ref-YouTube-VOS + RefCOCO/+/g)
    _entry("ytvos-joint-r50", "r50", "1GAzI9zLEQKxp5KQHu1FOuqlw5PwAhMey", _YT, _joint(58.7, 57.4, 60.1)),
    _entry("ytvos-joint-r101", "r101", "1R4PThhYGqaanm3h46gygQ6strHVJBpn5", _YT, _joint(59.3, 58.1, 60.4)),
    _entry("ytvos-joint-swin-l", "swin-l", "1_nGi5JjlRcOUI8kXXduOE5iv0apnSXgR", _YT, _joint(64.2, 62.3, 66.2)),
    _entry("ytvos-joint-video-swin-t", "video-swin-t", "1gPVVdAuX_0-H2McPPJYX6HldGQtekD8b", _YT,
           _joint(62.6, 59.9, 63.3)),
    _entry("ytvos-joint-video-swin-s", "video-swin-s", "1zm9URDfL19xi5LN9vCM2c58-W-A5RCz_", _YT,
           _joint(63.3, 61.4, 65.2)),
    _entry("ytvos-joint-video-swin-b", "video-swin-b", "183AJLTtzwL15r-hhG9hUFrK5tfq37BH1", _YT,
           _joint(64.9, 62.8, 67.0)),
    # A2D-Sentences (JHMDB-Sentences evaluated with the same checkpoints)
    _entry("a2d-video-swin-t-scratch", "video-swin-t", "1lK3Hulc8K6croRTrzJmz8QMhndQYDzsf", _A2D,
           _a2d(72.3, 64.1, 48.6), _CAPPED_640, note="no RefCOCO pre-training, 6 frames"),
    _entry("a2d-video-swin-t", "video-swin-t", "1b56oyvJZTY70ztCgDhD5vBG7fZohqzYE", _A2D,
           _a2d(77.6, 69.6, 52.8, (71.9, 71.0, 42.2)), _CAPPED_640),
    _entry("a2d-video-swin-s", "video-swin-s", "1edp5ZjCr4OG-8E9Co2_UgknoKMWUCB5y", _A2D,
           _a2d(77.7, 69.8, 53.9, (72.8, 71.5, 42.4)), _CAPPED_640),
    _entry("a2d-video-swin-b", "video-swin-b", "11UdnixY1ZQLpFqEq3_mdM4ELXGhrG7YD", _A2D,
           _a2d(78.6, 70.3, 55.0, (73.0, 71.8, 43.7)), _CAPPED_640),
    # RefCOCO/+/g pre-training (images, num_frames = 1): the initialisations of the video models
    _entry("refcoco-pretrain-r50", "r50", "1zFBTmWhHQn_QxN84hpT-fA0C5TzZUAZK", _COCO,
           _refcoco((85.0, 79.2, 79.0), (71.1, 64.1, 64.1)), _CAPPED_640),
    _entry("refcoco-pretrain-r101", "r101", "1FKIdXM9UEHSn93Xhbqi2hYBktDRMBsLr", _COCO,
           _refcoco((85.4, 75.8, 79.9), (71.8, 61.1, 64.9)), _CAPPED_640),
    _entry("refcoco-pretrain-swin-t", "swin-t", "1TcGsseTVftkpdw_glFOwG-Zvg3NMEPuw", _COCO,
           _refcoco((86.7, 77.2, 80.6), (72.9, 62.4, 66.1)), _CAPPED_640),
    _entry("refcoco-pretrain-swin-l", "swin-l", "1pM7mBgvHtI_XNbfkX5eKT4jsUaLL3Qa4", _COCO,
           _refcoco((89.8, 80.0, 83.9), (77.1, 65.8, 69.3)), _CAPPED_640),
    _entry("refcoco-pretrain-video-swin-t", "video-swin-t", "1qaEuOocLOZoj89unhZP3oN708ofmqopS", _COCO, {},
           _CAPPED_640, note="initialisation for A2D / Ref-YouTube-VOS training"),
    _entry("refcoco-pretrain-video-swin-s", "video-swin-s", "1SHzlzxE-KQeoGoYucdnPZtw_uz2ymgxn", _COCO, {},
           _CAPPED_640, note="initialisation for A2D / Ref-YouTube-VOS training"),
    _entry("refcoco-pretrain-video-swin-b", "video-swin-b", "1gbyknvuOiKpxK1kljxFnt1k5Jxp3R1jv", _COCO, {},
           _CAPPED_640, note="initialisation for A2D / Ref-YouTube-VOS training"),
]

PUBLISHED: dict[str, PublishedCheckpoint] = {entry.name: entry for entry in _ZOO}


def register_published(entry: PublishedCheckpoint) -> PublishedCheckpoint | None:
    """Make ``entry.name`` downloadable like a published checkpoint; returns the entry it replaced."""
    previous = PUBLISHED.get(entry.name)
    PUBLISHED[entry.name] = entry
    return previous


def get_published(name: str) -> PublishedCheckpoint:
    """The published checkpoint ``name``; ``UserError`` with close names when unknown."""
    if name in PUBLISHED:
        return PUBLISHED[name]
    import difflib

    close = difflib.get_close_matches(name, list(PUBLISHED), n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "`referformer presets` lists them"
    raise UserError(f"no published checkpoint named {name!r}; {hint}")
