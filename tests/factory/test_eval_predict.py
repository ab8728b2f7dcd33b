"""``segfactory eval`` and ``predict`` through the real CLI entry point, plus the evaluation loop itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from segfactory.factory.checkpoint import load_checkpoint, save_checkpoint
from segfactory.factory.cli import main
from segfactory.factory.config import ModelConfig
from segfactory.factory.datasets import CAMVID_CLASSES, open_dataset
from segfactory.factory.errors import InputError
from segfactory.factory.evaluate import TorchPredictor, evaluate
from segfactory.factory.model import build_model
from segfactory.factory.zoo import ZOO

from tests.synthetic_seg import make_camvid


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A synthetic CamVid folder and an (untrained, seeded) checkpoint for it."""
    import torch

    root = tmp_path_factory.mktemp("eval")
    make_camvid(root / "data", counts=(("train", 1), ("val", 3)))
    torch.manual_seed(0)
    config = ModelConfig.create(encoder_weights="none", agg_size=8, sep_repeats=1, class_names=CAMVID_CLASSES)
    model = build_model(ZOO["arch0"], config)
    save_checkpoint(root / "model.pt", model, metrics={}, train_config={"note": "untrained"})
    return root


def test_checkpoint_roundtrip(tiny_run):
    import torch

    model, meta = load_checkpoint(tiny_run / "model.pt")
    assert meta["format"] == "segfactory.checkpoint/1" and meta["train_config"] == {"note": "untrained"}
    assert model.config.class_names == CAMVID_CLASSES and not model.training
    raw = torch.load(tiny_run / "model.pt", weights_only=True)
    assert set(raw) >= {"genotype", "model_config", "state_dict", "metrics", "train_config", "format"}


def test_predictor_protocol(tiny_run):
    model, _ = load_checkpoint(tiny_run / "model.pt")
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 52, 3), dtype=np.uint8)
    labels = TorchPredictor(model)(images)
    assert labels.shape == (2, 40, 52) and np.issubdtype(labels.dtype, np.integer)
    assert labels.min() >= 0 and labels.max() < 11


def test_eval_json_agrees_with_predict_pngs(tiny_run, capsys, tmp_path):
    data = f"camvid:{tiny_run / 'data'}"
    code, out, err = run_cli(["eval", "--checkpoint", tiny_run / "model.pt", "--data", data, "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)  # exactly one object on stdout
    assert set(result) >= {"miou", "macc", "fwiou", "score", "per_class_iou", "num_images"}
    assert result["num_images"] == 3
    code, _, err = run_cli(["predict", "--checkpoint", tiny_run / "model.pt", "--input", tiny_run / "data" / "val",
                            "--out", tmp_path / "pred", "--overlay", "--quiet"], capsys)
    assert code == 0, err
    # an independent mIoU from the PNGs
    inter, union = np.zeros(11), np.zeros(11)
    for stem in open_dataset(data, "val").names:
        png = Image.open(tmp_path / "pred" / f"{stem}.png")
        assert png.mode == "L"
        pred = np.array(png)
        gt = np.array(Image.open(tiny_run / "data" / "valannot" / f"{stem}.png"))
        assert pred.shape == gt.shape
        keep = gt != 11
        for c in range(11):
            inter[c] += np.sum((pred == c) & (gt == c) & keep)
            union[c] += np.sum(((pred == c) | (gt == c)) & keep)
        overlay = Image.open(tmp_path / "pred" / "overlay" / f"{stem}.png")
        assert overlay.mode == "RGB" and overlay.size == png.size
    miou = float(np.mean(inter[union > 0] / union[union > 0]))
    assert abs(result["miou"] - miou) < 1e-6
    assert [v is None for v in result["per_class_iou"]] == list(union == 0)


def test_eval_table(tiny_run, capsys):
    code, out, _ = run_cli(["eval", "--checkpoint", tiny_run / "model.pt", "--data",
                            f"camvid:{tiny_run / 'data'}", "--quiet"], capsys)
    assert code == 0 and "mIoU" in out and "bicyclist" in out


def test_predict_single_image_keeps_size(tiny_run, capsys, tmp_path):
    Image.fromarray(np.zeros((33, 47, 3), np.uint8)).save(tmp_path / "odd.jpg")
    code, _, err = run_cli(["predict", "--checkpoint", tiny_run / "model.pt", "--input", tmp_path / "odd.jpg",
                            "--out", tmp_path / "o", "--quiet"], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "o" / "odd.png").size == (47, 33)


def test_evaluate_matches_a_perfect_predictor(tmp_path):
    make_camvid(tmp_path, counts=(("val", 2),))
    ds = open_dataset(f"camvid:{tmp_path}", "val")
    masks = {ds[i][0].tobytes(): ds[i][1] for i in range(len(ds))}

    def oracle(images):
        return np.stack([np.where(masks[im.tobytes()] == 11, 0, masks[im.tobytes()]) for im in images])

    result = evaluate(oracle, ds, batch_size=2, progress=False)
    assert result["miou"] == 1.0 and result["num_images"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--checkpoint", "{tmp}/missing.pt", "--data", "camvid-mini"], "does not exist"),
        (["eval", "--checkpoint", "{tmp}/garbage.pt", "--data", "camvid-mini"], "cannot be read"),
        (["eval", "--checkpoint", "{run}/model.pt", "--data", "voc:/x"], "unknown data spec"),
        (["eval", "--checkpoint", "{run}/model.pt", "--data", "camvid:{tmp}/nowhere"], "does not exist"),
        (["eval", "--data", "camvid-mini"], "exactly one of"),
        (["eval", "--model", "{tmp}/missing.onnx", "--data", "camvid-mini"], "does not exist"),
        (["eval", "--checkpoint", "{run}/model.pt", "--data", "camvid:{run}/data", "--split", "test"],
         "does not exist"),
        (["predict", "--checkpoint", "{run}/model.pt", "--input", "{tmp}/none", "--out", "{tmp}/o"],
         "does not exist"),
        (["predict", "--checkpoint", "{run}/model.pt", "--input", "{tmp}/garbage.pt", "--out", "{tmp}/o"],
         "not an image"),
    ],
)
def test_bad_inputs_give_one_line_errors(tiny_run, tmp_path, capsys, args, message):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    args = [a.format(tmp=tmp_path, run=tiny_run) for a in args]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert err.startswith("Error: ") and err.count("\n") == 1 and message in err
    assert "Traceback" not in err


def test_mismatched_checkpoint(tiny_run, tmp_path):
    import torch

    data = torch.load(tiny_run / "model.pt", weights_only=True)
    data["model_config"]["agg_size"] = 16
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="do not match"):
        load_checkpoint(tmp_path / "bad.pt")
    data["format"] = "something/9"
    torch.save(data, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a segfactory.checkpoint/1"):
        load_checkpoint(tmp_path / "other.pt")


def test_eval_of_an_onnx_model_uses_the_export_predictor(tiny_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    try:
        from segfactory.export.onnx import export_onnx
        from segfactory.export.predictor import OnnxPredictor  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the export package is not available: {e}")
    import inspect

    model, _ = load_checkpoint(tiny_run / "model.pt")
    sig = inspect.signature(export_onnx)
    if "input_size" not in sig.parameters:
        pytest.skip(f"export_onnx has an unexpected signature {sig}")
    export_onnx(model, tmp_path / "m.onnx", input_size=(64, 96))
    data = f"camvid:{tiny_run / 'data'}"
    code, out, err = run_cli(["eval", "--model", tmp_path / "m.onnx", "--data", data, "--json"], capsys)
    assert code == 0, err
    code, ref, err = run_cli(["eval", "--checkpoint", tiny_run / "model.pt", "--data", data, "--json"], capsys)
    assert abs(json.loads(out)["miou"] - json.loads(ref)["miou"]) < 0.02
