"""Model cards: the ``README.md`` of a model folder, written from its ``config.json`` and, when there
is one, its evaluation report (``report.json`` of ``referformer evaluate``).

The card is what the Hugging Face Hub shows for a pushed folder (:mod:`.hub`); converted published
checkpoints get one too (their official numbers come from ``metadata.official_results``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from referformer.checkpoint.pretrained import read_inference_settings, read_pretrained_config
from referformer.errors import UserError

CARD_FILE = "README.md"
REPORT_FILE = "report.json"  # what `referformer evaluate --out DIR` writes (DIR/report.json)
# report entries that describe the run rather than score it
_REPORT_CONTEXT = {"dataset", "split", "checkpoint", "preset", "inference", "outputs", "groups", "refused_expressions"}
_CITATION = """@inproceedings{wu2022referformer,
  title     = {Language as Queries for Referring Video Object Segmentation},
  author    = {Wu, Jiannan and Jiang, Yi and Sun, Peize and Yuan, Zehuan and Luo, Ping},
  booktitle = {CVPR},
  year      = {2022}
}"""


def read_report(report: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """An evaluation report: a dict as given, or the JSON file at that path."""
    if isinstance(report, Mapping):
        return dict(report)
    path = Path(report)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"evaluation report {path} is not readable JSON ({err}); pass the report.json that "
                        "`referformer evaluate --out DIR` wrote") from err
    if not isinstance(data, dict):
        raise UserError(f"evaluation report {path} holds {type(data).__name__}, not a JSON object")
    return data


def find_reports(folder: str | Path) -> list[Path]:
    """Reports kept in a model folder: ``report.json`` and ``reports/*.json``."""
    folder = Path(folder)
    found = [folder / REPORT_FILE] if (folder / REPORT_FILE).is_file() else []
    return found + sorted((folder / "reports").glob("*.json"))


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def _table(rows: Iterable[tuple[str, Any]], header: tuple[str, str]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {k} | {_number(v) if not isinstance(v, str) else v} |" for k, v in rows]
    return lines


def _report_section(report: Mapping[str, Any]) -> list[str]:
    title = " ".join(str(report[k]) for k in ("dataset", "split") if report.get(k)) or "evaluation"
    scores = [(k, v) for k, v in report.items()
              if k not in _REPORT_CONTEXT and isinstance(v, (int, float)) and not isinstance(v, bool)]
    lines = [f"### {title}", ""]
    if not scores:
        return lines + ["(the report holds no scalar scores)", ""]
    return lines + _table(scores, ("metric", "value")) + [""]


def model_card(folder: str | Path, reports: Iterable[str | Path | Mapping[str, Any]] = (),
               repo_id: str | None = None) -> str:
    """The card of the model folder ``folder`` (markdown with Hub metadata). ``reports``: evaluation
    reports (paths or dicts) to include besides those kept in the folder (:func:`find_reports`);
    ``repo_id``: where it will live, for the usage lines."""
    folder = Path(folder)
    config, metadata = read_pretrained_config(folder)
    settings = read_inference_settings(folder)
    model_type = getattr(config, "model_type", "referformer")
    name = repo_id or metadata.get("name") or folder.name
    where = f"hf://{repo_id}" if repo_id else str(metadata.get("name") or folder)
    text = getattr(config, "text_encoder", None)
    lines = ["---", "library_name: referformer", "license: apache-2.0", "tags:",
             "- referring-video-object-segmentation", "- video-object-segmentation", f"- {model_type}", "---", "",
             f"# {name}", ""]
    if model_type == "referformer":
        lines += ["ReferFormer (*Language as Queries for Referring Video Object Segmentation*, CVPR 2022): given a "
                  "video and a sentence, it segments the object the sentence refers to in every frame.", ""]
    else:
        lines += [f"A {model_type} model for referring video object segmentation.", ""]
    if metadata.get("description"):
        lines += [str(metadata["description"]), ""]
    lines += ["## Model", ""]
    arch: list[tuple[str, Any]] = [("model type", model_type)]
    if hasattr(config, "backbone"):
        arch.append(("backbone", config.backbone))
    if text is not None:
        arch.append(("text encoder", f"{text.num_hidden_layers} layers, width {text.hidden_size}, tokenizer "
                                     f"`{settings.tokenizer or text.tokenizer}`"))
    arch += [(k, getattr(config, k)) for k in ("num_queries", "hidden_dim", "enc_layers", "dec_layers", "num_classes",
                                               "with_box_refine", "output_stride") if hasattr(config, k)]
    lines += _table(arch, ("field", "value")) + [""]
    lines += ["Inference settings (`config.json` \"inference\"; every entry point starts from them):", ""]
    lines += _table(settings.to_dict().items(), ("setting", "value")) + [""]
    source = [(k, metadata[k]) for k in ("preset", "dataset", "source", "official_file", "sha256") if metadata.get(k)]
    if source:
        lines += ["## Source", ""] + _table(source, ("", "")) + [""]
    official = metadata.get("official_results") or {}
    if official:
        lines += ["## Official results", "", "As published with the original code (wjn922/ReferFormer):", ""]
        lines += _table(official.items(), ("benchmark", "score (%)")) + [""]
    all_reports = [read_report(r) for r in [*find_reports(folder), *reports]]
    if all_reports:
        lines += ["## Evaluation", "", "Measured with `referformer evaluate`:", ""]
        for report in all_reports:
            lines += _report_section(report)
    lines += ["## Usage", "", "```python", "from referformer import Predictor", "",
              f"predictor = Predictor.from_pretrained({where!r})",
              'results = predictor.predict("video.mp4", ["a person riding a bike"])', "```", "", "```bash",
              f'referformer segment video.mp4 -t "a person riding a bike" --checkpoint {where} --out results/',
              "```", "", "## Citation", "", "```bibtex", _CITATION, "```", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path, reports: Iterable[str | Path | Mapping[str, Any]] = (),
                     repo_id: str | None = None) -> Path:
    """Write :func:`model_card` to ``folder/README.md``; returns its path."""
    path = Path(folder) / CARD_FILE
    path.write_text(model_card(folder, reports, repo_id), encoding="utf-8")
    return path
