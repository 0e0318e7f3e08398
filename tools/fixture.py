"""Run our model on a reference fixture of the original code and write our outputs.

    python tools/fixture.py FIXTURE.pt --keys KEYS.tsv --out OURS.pt [--detweights PATH] [--compare]

A developer utility beside the package (not installed with it).

Builds the fixture's weights with ``detweights.py`` (its spec = ``--keys``, its seed = the fixture's
``weights.seed``), checks the fingerprint, saves them as an official-style checkpoint and loads that
through ``referformer.checkpoint`` into the preset ``<backbone>-<config>``; then feeds the fixture's
inputs (frames, RoBERTa ids, sizes) and writes ``outputs`` / ``postprocess`` (same keys, shapes and
meanings as the fixture) and ``intermediates`` (same names as ``*.intermediates.pt``).
``--compare`` prints the differences to the fixture (and to its intermediates, when found beside it).

Fixtures are trusted developer files (read with ``weights_only=False``).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from referformer.checkpoint import load_official_state_dict, read_official_checkpoint
from referformer.errors import UserError
from referformer.inference.postprocess import postprocess_clip


def find_detweights(keys_path: Path, override: str | Path | None = None) -> Path:
    """``detweights.py`` next to the keys file or in one of its parent folders (or ``override``)."""
    if override is not None:
        p = Path(override)
        if not p.is_file():
            raise UserError(f"--detweights {p} not found")
        return p
    for folder in [keys_path.resolve().parent, *keys_path.resolve().parents]:
        if (folder / "detweights.py").is_file():
            return folder / "detweights.py"
    raise UserError(f"detweights.py not found next to or above {keys_path}; pass --detweights PATH")


def import_file(path: Path, name: str = "detweights") -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def build_fixture_model(fixture: dict, keys_path: Path, detweights_path: Path | None = None) -> nn.Module:
    """Model of the fixture's preset with the fixture's generated weights, loaded like an official checkpoint."""
    from referformer.models import build_model
    from referformer.presets import get_preset

    dw = import_file(find_detweights(keys_path, detweights_path))
    sd, _skipped = dw.generate_state_dict(dw.read_spec(str(keys_path)), int(fixture["weights"]["seed"]))
    expected = fixture["weights"].get("fingerprint_sha256")
    got = dw.fingerprint(sd)
    if expected is not None and got != expected:
        raise UserError(f"generated weights fingerprint {got} != fixture's {expected}; wrong --keys file?")
    preset = get_preset(f"{fixture['backbone']}-{fixture['config']}")
    model = build_model(preset.config, init_weights=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "official.pth"
        torch.save({"model": sd}, path)
        del sd
        load_official_state_dict(model, read_official_checkpoint(path))
    return model.eval()


class IntermediateRecorder:
    """Forward hooks recording the tensors the fixtures' ``*.intermediates.pt`` hold (same names)."""

    def __init__(self, model: nn.Module) -> None:
        self.values: dict[str, Any] = {"fused_srcs": [], "dynamic_params": []}
        self._handles = [
            model.text_encoder.register_forward_hook(self._text),
            model.resizer.register_forward_hook(self._resizer),
            model.backbone.register_forward_hook(self._backbone),
            model.fusion_module.register_forward_hook(lambda m, i, o: self.values["fused_srcs"].append(o.detach())),
            model.transformer.register_forward_hook(self._transformer),
            model.pixel_decoder.register_forward_hook(lambda m, i, o: self.values.__setitem__("mask_features", o.detach())),
            model.controller.register_forward_hook(lambda m, i, o: self.values["dynamic_params"].append(o.detach())),
        ]
        self._resizer_calls = 0

    def _text(self, module, inputs, out) -> None:
        self.values["text_encoder.last_hidden_state"] = out.last_hidden_state.detach()
        self.values["text_encoder.pooler_output"] = out.pooler_output.detach()

    def _resizer(self, module, inputs, out) -> None:
        name = "text_word_features" if self._resizer_calls % 2 == 0 else "text_sentence_feature"
        self._resizer_calls += 1
        self.values[name] = out.detach()

    def _backbone(self, module, inputs, out) -> None:
        self.values["backbone_features"] = [o.detach() for o in out]

    def _transformer(self, module, inputs, out) -> None:
        self.values["transformer.hs"] = out.hs.detach()
        self.values["transformer.memory"] = [m.detach() for m in out.memory]
        self.values["transformer.init_reference"] = out.init_reference.detach()
        self.values["transformer.inter_references"] = out.inter_references.detach()

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def run_fixture(fixture: dict, model: nn.Module, record: bool = True) -> dict[str, Any]:
    """Feed the fixture's inputs to ``model``; returns {"outputs", "postprocess"[, "intermediates"]}."""
    inputs = fixture["inputs"]
    frames = inputs["frames"].float()
    size = inputs["size"].long().reshape(1, 2)
    orig_size = tuple(int(s) for s in inputs["orig_size"].tolist())
    recorder = IntermediateRecorder(model) if record else None
    try:
        with torch.inference_mode():
            out = model(frames[None], inputs["input_ids"].long(), inputs["attention_mask"].long(), image_sizes=size)
    finally:
        if recorder is not None:
            recorder.close()
    pred = postprocess_clip(out["pred_logits"][0], out["pred_boxes"][0], out["pred_masks"][0], orig_size,
                            reference_points=out["reference_points"][0])
    result: dict[str, Any] = {
        "outputs": out,
        "postprocess": {
            "query_scores": pred.query_scores,
            "selected_query": pred.query,
            "selected_logits": pred.logits,
            "selected_boxes": pred.boxes_cxcywh,
            "selected_ref_points": pred.reference_points,
            "mask_logits_orig_size": pred.mask_logits,
            "masks_orig_size": pred.masks,
        },
    }
    if recorder is not None:
        result["intermediates"] = recorder.values
    return result


# ---------------------------------------------------------------------------------------------
# comparison helpers
# ---------------------------------------------------------------------------------------------
def _flat_compare(ours: Tensor, ref: Any) -> tuple[float, str]:
    """Max abs difference of ``ours`` to a reference tensor or a sampled-stats dict."""
    ours = ours.detach().float()
    if isinstance(ref, dict) and ref.get("sampled"):
        if tuple(ours.shape) != tuple(ref["shape"]):
            return float("inf"), f"shape {tuple(ours.shape)} vs {tuple(ref['shape'])}"
        idx = ref["sample_index"].long()
        diff = (ours.flatten()[idx] - ref["sample_values"].float()).abs().max().item()
        return diff, f"sampled; mean {ours.mean().item():.6g} vs {ref['mean']:.6g}"
    ref = ref.float()
    if ours.numel() == ref.numel() and tuple(ours.shape) != tuple(ref.shape):
        ours = ours.reshape(ref.shape)
    if tuple(ours.shape) != tuple(ref.shape):
        return float("inf"), f"shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    return (ours - ref).abs().max().item() if ref.numel() else 0.0, ""


def compare_tree(ours: Any, ref: Any, prefix: str = "") -> list[tuple[str, float, str]]:
    """Walk two nested dict/list trees of tensors; returns (name, max abs diff, note) per leaf."""
    rows: list[tuple[str, float, str]] = []
    if isinstance(ref, dict) and not ref.get("sampled"):
        for k, v in ref.items():
            if isinstance(ours, dict) and k in ours:
                rows += compare_tree(ours[k], v, f"{prefix}.{k}" if prefix else str(k))
            else:
                rows.append((f"{prefix}.{k}", float("nan"), "missing in ours"))
    elif isinstance(ref, (list, tuple)):
        for i, v in enumerate(ref):
            rows += compare_tree(ours[i], v, f"{prefix}[{i}]")
    elif isinstance(ref, Tensor) or isinstance(ref, dict):
        if isinstance(ours, Tensor):
            rows.append((prefix, *_flat_compare(ours, ref)))
        else:
            rows.append((prefix, float("nan"), f"ours is {type(ours).__name__}"))
    else:
        rows.append((prefix, 0.0 if ours == ref else float("inf"), f"{ours!r} vs {ref!r}"))
    return rows


def print_rows(rows: list[tuple[str, float, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    for name, diff, note in rows:
        print(f"{name:<{width}}  {diff:12.4g}  {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fixture", type=Path)
    parser.add_argument("--keys", type=Path, required=True, help="keys_*.tsv spec the fixture's weights use")
    parser.add_argument("--out", type=Path, required=True, help="where to write our outputs (.pt)")
    parser.add_argument("--detweights", type=Path, default=None, help="path of detweights.py (default: search)")
    parser.add_argument("--compare", action="store_true", help="print differences to the fixture")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        fixture = torch.load(args.fixture, map_location="cpu", weights_only=False)
        model = build_fixture_model(fixture, args.keys, args.detweights)
        result = run_fixture(fixture, model)
    except UserError as err:
        print(f"fixture: error: {err}", file=sys.stderr)
        return 2
    result["backbone"], result["config"], result["seed"] = fixture["backbone"], fixture["config"], fixture["seed"]
    torch.save(result, args.out)
    print(f"wrote {args.out}")
    if args.compare:
        print_rows(compare_tree(result["outputs"], fixture["outputs"], "outputs")
                   + compare_tree(result["postprocess"], fixture["postprocess"], "postprocess"))
        inter_path = args.fixture.with_name(args.fixture.name.replace(".pt", ".intermediates.pt"))
        if inter_path.is_file():
            ref = torch.load(inter_path, map_location="cpu", weights_only=False)["intermediates"]
            print_rows(compare_tree(result["intermediates"], ref, "intermediates"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
