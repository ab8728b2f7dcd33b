"""``segfactory export`` through the real CLI entry point: artefacts, model card, JSON, and every error case."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from segfactory.export.tensorrt import tensorrt_available
from segfactory.factory.checkpoint import save_checkpoint
from segfactory.factory.cli import main
from segfactory.factory.config import ModelConfig
from segfactory.factory.model import build_model
from segfactory.factory.zoo import ZOO

from tests.export.test_export_genotypes import sharpen
from tests.synthetic_seg import make_camvid

CONFIG = ModelConfig.create(num_classes=11, agg_size=8, sep_repeats=1, encoder_weights="none")


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A synthetic CamVid folder and a (seeded, untrained) checkpoint that says it was trained on CamVid."""
    import torch

    root = tmp_path_factory.mktemp("export-cli")
    data = make_camvid(root / "camvid", counts=(("train", 4), ("val", 3)), size=(48, 64))
    torch.manual_seed(0)
    model = sharpen(build_model(ZOO["arch0"], CONFIG))
    ckpt = save_checkpoint(root / "run" / "model.pt", model, metrics={"miou": 0.1},
                           train_config={"arch": "arch0", "data": f"camvid:{data}"})
    return root, f"camvid:{data}", ckpt


def test_checkpoint_to_int8_with_card_json_and_eval(setup, capsys):
    root, data, ckpt = setup
    out = root / "int8" / "model.onnx"
    code, stdout, err = run_cli(["export", "--checkpoint", ckpt.parent, "--input-size", "48x64", "--precision",
                                 "int8", "--calib-images", "2", "--data", data, "--out", out, "--json", "-q"],
                                capsys)
    assert code == 0, err
    result = json.loads(stdout)  # exactly one JSON object
    assert result["parity_fp32"]["passed"] and result["parity_fp32"]["agreement"] >= 0.999
    assert result["precision"] == "int8" and result["calibration"]["images"] == 2
    assert 0.0 <= result["evaluation"]["miou"] <= 1.0 and "miou_fp32" in result["evaluation"]

    card = json.loads((out.parent / "model.onnx.json").read_text())
    assert card["format"] == "segfactory.model-card/1"
    assert card["artefact"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert card["precision"] == "int8" and card["opset"] == 17
    assert card["genotype"] == ZOO["arch0"].to_dict() and card["genotype_key"] == ZOO["arch0"].key()
    assert ModelConfig.from_dict(card["model_config"]) == CONFIG
    assert len(card["classes"]) == 11
    assert card["input"]["name"] == "image" and card["input"]["shape"] == [1, 3, 48, 64]
    assert card["input"]["normalisation"]["mean"] == list(CONFIG.mean)
    assert card["output"]["name"] == "logits" and card["output"]["shape"] == [1, 11, 48, 64]
    assert card["params"] > 0 and card["macs"] > 0
    assert card["parity"]["precision"] == "int8" and card["evaluation"]["miou"] == result["evaluation"]["miou"]
    assert "research" in card["licences"]["training_data"] and card["licences"]["encoder_weights"].startswith("none")
    assert card["command"] == (f"segfactory export --checkpoint {ckpt.parent} --input-size 48x64 --precision int8 "
                               f"--data {data} --calib-images 2 --out {out} --quiet")

    # The ONNX Runtime predictor behind `segfactory eval --model` reads the exported file.
    code, stdout, err = run_cli(["eval", "--model", out, "--data", data, "--split", "val", "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["miou"] == pytest.approx(result["evaluation"]["miou"])


def test_arch_labels_uint8_dynamic_fp16(setup, capsys):
    root, data, _ = setup
    out = root / "fp16" / "m.onnx"
    code, _stdout, err = run_cli(["export", "--arch", "arch1", "--agg-size", "8", "--sep-repeats", "1",
                                 "--encoder-weights", "none", "--input-size", "48x64", "--precision", "fp16",
                                 "--output", "labels", "--input", "uint8", "--dynamic-batch", "--data", data,
                                 "--out", out, "--json", "-q"], capsys)
    assert code == 0, err
    card = json.loads((root / "fp16" / "m.onnx.json").read_text())
    assert card["input"]["dtype"] == "uint8" and card["input"]["normalisation"]["in_graph"]
    assert card["output"] == {**card["output"], "name": "labels", "dtype": "uint8", "shape": ["batch", 48, 64]}
    assert card["licences"]["training_data"].startswith("none")
    from segfactory.factory.datasets import CAMVID_CLASSES

    assert [c["name"] for c in card["classes"]] == list(CAMVID_CLASSES)  # named by the data it was checked on


@pytest.mark.parametrize("case", ["corrupt-checkpoint", "missing-checkpoint", "unknown-arch", "tiny-size",
                                  "zero-size", "bad-size", "config-with-checkpoint", "bad-data"])
def test_bad_input_is_one_line_exit_2_and_file_untouched(case, setup, capsys, tmp_path):
    _root, _data, ckpt = setup
    out = tmp_path / "keep.onnx"
    out.write_bytes(b"previous export")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80not a torch file")
    common = ["--out", out, "-q"]
    args = {
        "corrupt-checkpoint": ["--checkpoint", bad, "--input-size", "48x64"],
        "missing-checkpoint": ["--checkpoint", tmp_path / "none.pt", "--input-size", "48x64"],
        "unknown-arch": ["--arch", "arch9", "--input-size", "48x64"],
        "tiny-size": ["--arch", "arch0", "--input-size", "4x4"],
        "zero-size": ["--arch", "arch0", "--input-size", "0x64"],
        "bad-size": ["--arch", "arch0", "--input-size", "big"],
        "config-with-checkpoint": ["--checkpoint", ckpt, "--num-classes", "5", "--input-size", "48x64"],
        "bad-data": ["--arch", "arch0", "--encoder-weights", "none", "--input-size", "48x64", "--data", "nope"],
    }[case]
    code, _stdout, err = run_cli(["export", *args, *common], capsys)
    assert code == 2, err
    one_line_error(err)
    assert out.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt", "keep.onnx"]


def test_failed_fp32_parity_is_exit_1_and_file_untouched(setup, capsys, tmp_path, monkeypatch):
    from segfactory.export import parity

    real = parity.check_parity

    def broken(*args, **kwargs):
        result = real(*args, **kwargs)
        return {**result, "agreement": 0.98, "passed": False}

    monkeypatch.setattr(parity, "check_parity", broken)
    _root, data, ckpt = setup
    out = tmp_path / "keep.onnx"
    out.write_bytes(b"previous export")
    code, _, err = run_cli(["export", "--checkpoint", ckpt, "--input-size", "48x64", "--data", data, "--out", out,
                            "-q"], capsys)
    assert code == 1
    assert "parity" in one_line_error(err)
    assert out.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.onnx"]


@pytest.mark.skipif(tensorrt_available() is None, reason="TensorRT and CUDA are present: the engine is built")
def test_trt_without_tensorrt_writes_onnx_and_trtexec_command(setup, capsys, tmp_path):
    _root, data, ckpt = setup
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"previous engine")
    code, _, err = run_cli(["export", "--checkpoint", ckpt, "--format", "trt", "--input-size", "48x64",
                            "--dynamic-batch", "--data", data, "--out", engine, "-q"], capsys)
    assert code == 1
    line = one_line_error(err)
    assert "TensorRT" in line and "segfactory[trt]" in line and "agent" in line
    assert engine.read_bytes() == b"previous engine"
    command = (tmp_path / "model.engine.trtexec.txt").read_text()
    assert command.startswith("trtexec ") and "--stronglyTyped" in command
    assert f"--onnx={tmp_path / 'model.engine.onnx'}" in command and "--maxShapes=image:8x3x48x64" in command
    card = json.loads((tmp_path / "model.engine.onnx.json").read_text())
    assert card["artefact"]["sha256"] == hashlib.sha256((tmp_path / "model.engine.onnx").read_bytes()).hexdigest()


@pytest.mark.skipif(tensorrt_available() is None, reason="TensorRT and CUDA are present: the engine is built")
def test_trt_export_never_replaces_another_models_onnx(setup, capsys, tmp_path):
    """Issue 15.1: `--format trt --out ex/a.engine` used to write its ONNX over ex/a.onnx (another model's)."""
    import torch

    _root, data, ckpt = setup
    other = tmp_path / "other.pt"
    torch.manual_seed(7)
    save_checkpoint(other, build_model(ZOO["arch1"], CONFIG, load_weights=False), metrics={},
                    train_config={"arch": "arch1", "data": data})
    code, _, err = run_cli(["export", "--checkpoint", ckpt, "--input-size", "48x64", "--data", data, "--out",
                            tmp_path / "a.onnx", "-q"], capsys)
    assert code == 0, err
    before = {name: (tmp_path / name).read_bytes() for name in ("a.onnx", "a.onnx.json")}
    code, _, err = run_cli(["export", "--checkpoint", other, "--format", "trt", "--input-size", "48x64", "--data",
                            data, "--out", tmp_path / "a.engine", "-q"], capsys)
    assert code == 1 and "a.engine.onnx" in one_line_error(err)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before  # byte-identical


def test_unwritable_out_is_refused_before_any_work(setup, capsys, tmp_path, monkeypatch):
    """Issue 15.5: an --out under a file (or in a read-only folder) is exit 2 before the export runs."""
    from segfactory.export import onnx as onnx_export

    def never(*args, **kwargs):
        raise AssertionError("the export ran although --out cannot be written")

    monkeypatch.setattr(onnx_export, "export_onnx", never)
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(["export", "--arch", "arch0", "--encoder-weights", "none", "--input-size", "48x64",
                            "--out", tmp_path / "afile" / "m.onnx", "-q"], capsys)
    assert code == 2 and "is a file" in one_line_error(err)
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        code, _, err = run_cli(["export", "--arch", "arch0", "--encoder-weights", "none", "--input-size", "48x64",
                                "--out", ro / "m.onnx", "-q"], capsys)
        assert code == 2 and "cannot be written" in one_line_error(err)


def test_export_size_beyond_memory_is_refused(capsys, tmp_path):
    """Issue 15.2: `export --input-size` is bounded by the host's memory (estimated before exporting)."""
    code, _, err = run_cli(["export", "--arch", "arch0", "--encoder-weights", "none", "--input-size", "8000x8000",
                            "--out", tmp_path / "m.onnx", "-q"], capsys)
    assert code == 2 and "estimated" in one_line_error(err) and "--input-size" in err
    assert list(tmp_path.iterdir()) == []
