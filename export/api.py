"""``export_model``: what ``segfactory export`` runs. Build or load the model, export, check, write the card.

Everything is made in a temporary folder first; the requested FILE is replaced only once every check has
passed, so a failed export never touches an existing FILE.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from segfactory.factory.errors import InputError, RunError

FORMATS = ("onnx", "trt")
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_DATA = "camvid-mini"
RESULT_FORMAT = "segfactory.export-result/1"


def load_model(checkpoint: str | Path | None, arch: str | None, config=None):
    """(SegModel in eval mode, training data spec or None, source description) from a checkpoint or an arch."""
    if (checkpoint is None) == (arch is None):
        raise InputError("pass exactly one of --checkpoint DIR/model.pt and --arch NAME|GENOTYPE.json")
    if checkpoint is not None:
        from segfactory.factory.checkpoint import load_checkpoint

        path = Path(checkpoint)
        if path.is_dir():
            path = path / "model.pt"
        model, meta = load_checkpoint(path, device="cpu")
        train = meta.get("train_config") or {}
        data = train.get("data") if isinstance(train, dict) else None
        source = {"checkpoint": str(path), "metrics": meta.get("metrics")}
        return model, data, source
    import torch
    from segfactory.factory.config import ModelConfig
    from segfactory.factory.model import build_model
    from segfactory.factory.zoo import resolve_arch

    genotype = resolve_arch(arch)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # an untrained decoder: the same --arch gives the same file
        model = build_model(genotype, config or ModelConfig.create()).eval()
    return model, None, {"arch": str(arch), "trained": False}


def _default_data() -> str | None:
    from segfactory.factory.datasets import camvid_mini_path

    try:
        camvid_mini_path()
    except InputError:
        return None
    return DEFAULT_DATA


def _images(spec: str | None, split: str, count: int, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """Real images from ``spec`` or, without data, seeded random ones (named as such in the result)."""
    if spec is not None:
        from segfactory.factory.datasets import load_images

        return load_images(spec, split, count, size), f"{spec} {split}"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(min(count, 4), *size, 3), dtype=np.uint8), "random images (no --data)"


def _engine_paths(out: Path) -> tuple[Path, Path]:
    """(ONNX file the engine is built from, trtexec command file) beside the engine ``out``."""
    onnx_path = out.with_suffix(".onnx")
    if onnx_path == out:
        onnx_path = out.with_name(out.name + ".onnx")
    return onnx_path, out.with_name(out.name + ".trtexec.txt")


def _place(src: Path, dst: Path) -> Path:
    """Copy ``src`` over ``dst`` atomically (write beside it, then rename)."""
    from segfactory.factory.io import atomic_write

    return atomic_write(dst, lambda p: shutil.copyfile(src, p))


def export_model(
    *,
    out: str | Path,
    input_size: tuple[int, int],
    checkpoint: str | Path | None = None,
    arch: str | None = None,
    config=None,
    fmt: str = "onnx",
    precision: str = "fp32",
    dynamic_batch: bool = False,
    opset: int = 17,
    data: str | None = None,
    calib_images: int = 32,
    parity_images: int = 12,
    output: str = "logits",
    input_dtype: str = "float",
    exporter: str = "torchscript",
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Export a checkpoint or architecture to ``out`` (ONNX or a TensorRT engine) with its model card.

    FP32 parity against PyTorch must reach 99.9% argmax agreement or the export fails (RunError).
    Returns a summary: paths, parity of FP32 and of the artefact, mIoU where measured.
    """
    from segfactory.export.card import card_path, make_card, write_card
    from segfactory.export.onnx import check_options, export_onnx, graph_io
    from segfactory.export.parity import check_parity

    say = log or (lambda _msg: None)
    if fmt not in FORMATS:
        raise InputError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    check_options(input_size, opset, output, input_dtype, exporter)
    if calib_images < 1 or parity_images < 1:
        raise InputError("--calib-images and the parity image count must be positive")
    out = Path(out)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name such as model.onnx")
    if fmt == "onnx" and out.suffix.lower() != ".onnx":
        raise InputError(f"--out {out}: an ONNX export is written to a .onnx file")
    explicit_data = data is not None
    if data is not None:
        from segfactory.factory.datasets import parse_spec

        parse_spec(data)
    else:
        data = _default_data()
    if precision == "int8" and data is None:
        raise InputError("--precision int8 needs real calibration images: pass --data SPEC (camvid-mini is absent)")

    say("loading the model")
    model, trained_on, source = load_model(checkpoint, arch, config)
    images, images_from = _images(data, "val", parity_images, input_size)

    result: dict[str, Any] = {"format": RESULT_FORMAT, "out": str(out), "artefact_format": fmt,
                              "precision": precision, "input_size": list(input_size), "parity_images": images_from}
    with tempfile.TemporaryDirectory(prefix="segfactory-export-") as tmp:
        tmp_dir = Path(tmp)
        fp32 = tmp_dir / "fp32.onnx"
        say(f"exporting ONNX (opset {opset}, {exporter} exporter)")
        export_onnx(model, fp32, input_size=input_size, opset=opset, dynamic_batch=dynamic_batch, output=output,
                    input_dtype=input_dtype, exporter=exporter)
        say(f"checking FP32 parity against PyTorch on {len(images)} {images_from}")
        parity32 = check_parity(model, fp32, images, precision="fp32")
        result["parity_fp32"] = parity32
        if not parity32["passed"]:
            raise RunError(
                f"FP32 ONNX parity failed: argmax agreement {parity32['agreement']:.4%} (needs >= 99.9%), "
                f"logits within tolerance {parity32['within_tolerance']}, max abs diff {parity32['max_abs_diff']}; "
                f"{out} was not written"
            )
        final, parity = fp32, parity32
        if precision == "fp16":
            from segfactory.export.precision import convert_fp16

            say("converting to FP16")
            final = convert_fp16(fp32, tmp_dir / "fp16.onnx")
            parity = check_parity(model, final, images, precision="fp16", min_agreement=None)
        elif precision == "int8":
            from segfactory.export.precision import quantize_onnx

            calib, calib_from = _images(data, "train", calib_images, input_size)
            say(f"quantising to INT8 Q/DQ, calibrated on {len(calib)} {calib_from} images")
            final = quantize_onnx(fp32, tmp_dir / "int8.onnx", calib)
            parity = check_parity(model, final, images, precision="int8", min_agreement=None)
            result["calibration"] = {"images": len(calib), "from": calib_from}
        result["parity"] = parity

        evaluation = None
        if data is not None and (precision != "fp32" or explicit_data):
            evaluation = _evaluate(final, fp32 if precision != "fp32" else None, data, model, say)
            result["evaluation"] = evaluation

        onnx_out, trtexec_file = (out, None) if fmt == "onnx" else _engine_paths(out)
        io = graph_io(final)
        card_args = {"model": model, "input_size": input_size, "io": io, "input_dtype": input_dtype,
                     "output": output, "precision": precision, "dynamic_batch": dynamic_batch,
                     "evaluation": evaluation, "training_data": trained_on, "source": source, "command": command,
                     "class_names": _class_names(model, data)}
        _place(final, onnx_out)
        write_card(onnx_out, make_card(onnx_out, artefact_format="onnx", opset=opset, parity=parity, **card_args))
        result["onnx"] = str(onnx_out)
        result["card"] = str(card_path(onnx_out))
        if fmt == "trt":
            result.update(_build_engine(onnx_out, out, trtexec_file, images, card_args, say))
    return result


def _class_names(model, data: str | None) -> tuple[str, ...] | None:
    """The dataset's class names when the model's config has none and the class counts agree."""
    if model.config.class_names or data is None:
        return None
    from segfactory.factory.datasets import open_dataset

    try:
        dataset = open_dataset(data, "val")
    except InputError:
        return None
    names = tuple(dataset.class_names)
    return names if len(names) == model.config.num_classes else None


def _evaluate(final: Path, fp32: Path | None, data: str, model, say) -> dict[str, Any]:
    """mIoU of the artefact (and of its FP32 source, to show what reduced precision costs) on ``data`` val."""
    from segfactory.export.predictor import OnnxPredictor
    from segfactory.factory.datasets import open_dataset
    from segfactory.factory.evaluate import evaluate

    dataset = open_dataset(data, "val")
    if dataset.num_classes != model.config.num_classes:
        return {"skipped": f"{data} has {dataset.num_classes} classes, the model {model.config.num_classes}"}
    say(f"evaluating on {data} val ({len(dataset)} images)")
    metrics = evaluate(OnnxPredictor(final), dataset, progress=False)
    out = {"data": data, "split": "val", "images": len(dataset), "miou": metrics.get("miou"),
           "pixel_acc": metrics.get("pixel_acc"), "per_class_iou": metrics.get("per_class_iou")}
    if fp32 is not None:
        ref = evaluate(OnnxPredictor(fp32), dataset, progress=False)
        out["miou_fp32"] = ref.get("miou")
    return out


def _build_engine(onnx_path: Path, out: Path, trtexec_file: Path, images: np.ndarray,
                  card_args: dict[str, Any], say) -> dict[str, Any]:
    from segfactory.export.card import card_path, make_card, write_card
    from segfactory.export.tensorrt import (
        EngineConfig,
        check_engine_parity,
        engine_from_onnx,
        tensorrt_available,
        tensorrt_version,
        trtexec_command,
    )
    from segfactory.factory.io import atomic_write_text

    config = EngineConfig(timing_cache=str(out.parent / "tensorrt.timing-cache"))
    command = trtexec_command(onnx_path, out, config)
    atomic_write_text(trtexec_file, command + "\n")
    why = tensorrt_available()
    if why:
        raise RunError(f"{why}, so no engine was built: wrote {onnx_path} and the equivalent trtexec command in "
                       f"{trtexec_file}; to proceed, install the trt extra on the target (pip install "
                       "'segfactory[trt]') or build on the device with the agent (segfactory agent serve)")
    with tempfile.TemporaryDirectory(prefix="segfactory-engine-", dir=out.parent) as tmp:
        engine = Path(tmp) / out.name
        say("building the TensorRT engine")
        engine_from_onnx(onnx_path, engine, config)
        parity = check_engine_parity(onnx_path, engine, images)
        _place(engine, out)
    write_card(out, make_card(out, artefact_format="tensorrt", tensorrt_version=tensorrt_version(), parity=parity,
                              extra={"built_from": onnx_path.name}, **card_args))
    return {"engine": str(out), "engine_card": str(card_path(out)), "engine_parity": parity,
            "trtexec": str(trtexec_file)}
