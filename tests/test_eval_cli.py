"""``referformer evaluate --protocol ...``: JSON / table output and one-line user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from referformer import cli


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="L").convert("P")
    image.putpalette([0, 0, 0, 128, 0, 0] + [255] * (256 * 3 - 6))
    image.save(path)


def _davis_tree(tmp_path, shift=0):
    for t in range(2):
        gt = np.zeros((64, 96), np.uint8)
        gt[10:20, 10:20] = 1
        _png(tmp_path / "gt" / "seq" / f"{t:05d}.png", gt)
        _png(tmp_path / "pred" / "seq" / f"{t:05d}.png", np.roll(gt, shift, axis=1))


def test_davis_json(tmp_path, capsys):
    _davis_tree(tmp_path, shift=2)
    argv = [
        "evaluate",
        "--protocol",
        "davis",
        "--gt",
        str(tmp_path / "gt"),
        "--pred",
        str(tmp_path / "pred"),
    ]
    assert cli.main(argv + ["--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    keys = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    assert all(k in out for k in keys)
    assert out["J-Mean"] == pytest.approx(2 / 3) and out["F-Mean"] == pytest.approx(0.55)
    assert out["J-Decay"] == 0.0 and out["F-Recall"] == 1.0
    assert out["per_object"][0]["name"] == "seq_1"
    assert cli.main(argv + ["--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "J&F-Mean" in table and "seq_1" in table


def test_a2d_json(tmp_path, capsys):
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 1
    r = mask_utils.encode(np.asfortranarray(mask))
    r["counts"] = r["counts"].decode()
    gt = {
        "images": [{"id": "v_x_f_1_i_0", "height": 8, "width": 8}],
        "annotations": [
            {
                "id": 1,
                "image_id": "v_x_f_1_i_0",
                "segmentation": r,
                "area": 16.0,
                "iscrowd": 0,
                "category_id": 1,
            }
        ],
        "categories": [{"id": 1, "name": "object"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    preds = [{"image_id": "v_x_f_1_i_0", "category_id": 1, "segmentation": r, "score": 0.7}]
    (tmp_path / "res.json").write_text(json.dumps(preds))
    argv = [
        "evaluate",
        "--protocol",
        "a2d",
        "--gt",
        str(tmp_path / "gt.json"),
        "--pred",
        str(tmp_path / "res.json"),
    ]
    assert cli.main(argv + ["--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in [
        "P@0.5",
        "P@0.9",
        "overall_iou",
        "mean_iou",
        "mAP",
        "mAP_best_query",
        "AP50",
        "AP75",
        "AP_small",
        "AP_medium",
        "AP_large",
    ]:
        assert key in out
    assert out["mAP"] == pytest.approx(1.0) and out["P@0.9"] == 1.0 and out["AP_medium"] == -1.0
    assert out["per_sample"] == [
        {"image_id": "v_x_f_1_i_0", "iou": 1.0, "intersection": 16, "union": 16, "score": 0.7}
    ]


def test_user_errors_are_one_line(tmp_path, capsys):
    argv = [
        "evaluate",
        "--protocol",
        "davis",
        "--gt",
        str(tmp_path / "missing"),
        "--pred",
        str(tmp_path),
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err
    assert cli.main(["evaluate", "--dataset", "a2d"]) == 2
    assert "--root" in capsys.readouterr().err
    assert cli.main(["evaluate", "--protocol", "a2d", "--gt", str(tmp_path)]) == 2
    assert "--pred" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: the two modes are exclusive
        cli.main(["evaluate", "--protocol", "davis", "--dataset", "a2d"])
