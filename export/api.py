"""``export_model``: what ``segfactory export`` runs. Build or load the model, export, check, write the card.

Everything is made in a temporary folder first; the requested FILE is replaced only once every check has
passed, so a failed export never touches an existing FILE.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from segfactory.export.card import card_path, make_card, publish
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
    from segfactory.factory.model import build_model, config_for
    from segfactory.factory.zoo import resolve_arch

    resolved = resolve_arch(arch)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # an untrained decoder: the same --arch gives the same file
        model = build_model(resolved, config_for(resolved, config or ModelConfig.create())).eval()
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
    """(ONNX file the engine is built from, trtexec command file) beside the engine ``out``.

    Both names extend ``out``'s own (``a.engine`` -> ``a.engine.onnx``), so an engine export never replaces a
    file that belongs to another export (``a.onnx`` may be another model's).
    """
    return out.with_name(out.name + ".onnx"), out.with_name(out.name + ".trtexec.txt")


@dataclass(frozen=True)
class ExportOptions:
    """How to export: everything ``segfactory export`` takes besides the model and ``--out``."""

    input_size: tuple[int, int]
    fmt: str = "onnx"  # onnx | trt
    precision: str = "fp32"  # fp32 | fp16 | int8
    dynamic_batch: bool = False
    opset: int = 17
    data: str | None = None  # images for parity, calibration and mIoU; None: camvid-mini where present
    calib_images: int = 32
    parity_images: int = 12
    output: str = "logits"  # logits | labels
    input_dtype: str = "float"  # float | uint8
    exporter: str = "torchscript"  # torchscript | dynamo

    def __post_init__(self) -> None:
        from segfactory.export.onnx import check_options

        if self.fmt not in FORMATS:
            raise InputError(f"format {self.fmt!r} is not one of {', '.join(FORMATS)}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        check_options(tuple(self.input_size), self.opset, self.output, self.input_dtype, self.exporter)
        if self.calib_images < 1 or self.parity_images < 1:
            raise InputError("--calib-images and the parity image count must be positive")
        if self.data is not None:
            from segfactory.factory.datasets import parse_spec

            parse_spec(self.data)


def _check_out(out: Path, fmt: str) -> None:
    """Refuse an --out that cannot be written before any work is done (exit 2, not a late OSError)."""
    from segfactory.factory.io import check_writable

    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name such as model.onnx")
    if fmt == "onnx" and out.suffix.lower() != ".onnx":
        raise InputError(f"--out {out}: an ONNX export is written to a .onnx file")
    check_writable(out, "--out")


def _check_memory(model, options: ExportOptions) -> None:
    from segfactory.export.parity import BATCH
    from segfactory.factory.memory import check_fits, inference_bytes

    h, w = options.input_size
    from segfactory.factory.model import build_model

    build = lambda: build_model(model.arch, model.config, load_weights=False)
    # the torch model and ONNX Runtime both run parity batches at the export size
    need = 2 * inference_bytes(build, (h, w), BATCH)
    check_fits(need, "cpu", f"exporting at {h}x{w}", "lower --input-size")


def export_model(out: str | Path, options: ExportOptions, *, checkpoint: str | Path | None = None,
                 arch: str | None = None, config=None, command: str | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Export a checkpoint or architecture to ``out`` (ONNX or a TensorRT engine) with its model card.

    FP32 parity against PyTorch must reach 99.9% argmax agreement or the export fails (RunError).
    Returns a summary: paths, parity of FP32 and of the artefact, mIoU where measured.
    """
    say = log or (lambda _msg: None)
    out = Path(out)
    _check_out(out, options.fmt)
    data = options.data if options.data is not None else _default_data()
    if options.precision == "int8" and data is None:
        raise InputError("--precision int8 needs real calibration images: pass --data SPEC (camvid-mini is absent)")
    model, trained_on, source = load_model(checkpoint, arch, config)
    _check_memory(model, options)
    images, images_from = _images(data, "val", options.parity_images, options.input_size)
    result: dict[str, Any] = {"format": RESULT_FORMAT, "out": str(out), "artefact_format": options.fmt,
                              "precision": options.precision, "input_size": list(options.input_size),
                              "parity_images": images_from}
    with tempfile.TemporaryDirectory(prefix="segfactory-export-") as tmp:
        final = _export_checked(model, Path(tmp), options, data, images, out, result, say)
        if data is not None and (options.precision != "fp32" or options.data is not None):
            fp32 = Path(tmp) / "fp32.onnx" if options.precision != "fp32" else None
            result["evaluation"] = _evaluate(final, fp32, data, model, say)
        onnx_out, trtexec_file = (out, None) if options.fmt == "onnx" else _engine_paths(out)
        card_args = {"model": model, "input_size": options.input_size, "io": graph_io_of(final),
                     "input_dtype": options.input_dtype, "output": options.output, "precision": options.precision,
                     "dynamic_batch": options.dynamic_batch, "evaluation": result.get("evaluation"),
                     "training_data": trained_on, "source": source, "command": command,
                     "class_names": _class_names(model, data)}
        publish(final, onnx_out, make_card(final, name=onnx_out.name, artefact_format="onnx", opset=options.opset,
                                           parity=result["parity"], **card_args))
        result["onnx"], result["card"] = str(onnx_out), str(card_path(onnx_out))
        if options.fmt == "trt":
            result.update(_build_engine(onnx_out, out, trtexec_file, images, card_args, say))
    return result


def graph_io_of(path: Path) -> dict[str, Any]:
    from segfactory.export.onnx import graph_io

    return graph_io(path)


def _export_checked(model, tmp: Path, options: ExportOptions, data: str | None, images: np.ndarray, out: Path,
                    result: dict[str, Any], say: Callable[[str], None]) -> Path:
    """Export FP32, check its parity (fail: RunError), convert to the asked precision; the final ONNX path."""
    from segfactory.export.onnx import export_onnx
    from segfactory.export.parity import check_parity

    fp32 = tmp / "fp32.onnx"
    say(f"exporting ONNX (opset {options.opset}, {options.exporter} exporter)")
    export_onnx(model, fp32, input_size=options.input_size, opset=options.opset, dynamic_batch=options.dynamic_batch,
                output=options.output, input_dtype=options.input_dtype, exporter=options.exporter)
    say(f"checking FP32 parity against PyTorch on {len(images)} {result['parity_images']}")
    parity32 = check_parity(model, fp32, images, precision="fp32")
    result["parity_fp32"] = result["parity"] = parity32
    if not parity32["passed"]:
        raise RunError(
            f"FP32 ONNX parity failed: argmax agreement {parity32['agreement']:.4%} (needs >= 99.9%), "
            f"logits within tolerance {parity32['within_tolerance']}, max abs diff {parity32['max_abs_diff']}; "
            f"{out} was not written"
        )
    if options.precision == "fp16":
        from segfactory.export.precision import convert_fp16

        say("converting to FP16")
        final = convert_fp16(fp32, tmp / "fp16.onnx")
    elif options.precision == "int8":
        from segfactory.export.precision import quantize_onnx

        calib, calib_from = _images(data, "train", options.calib_images, options.input_size)
        say(f"quantising to INT8 Q/DQ, calibrated on {len(calib)} {calib_from} images")
        final = quantize_onnx(fp32, tmp / "int8.onnx", calib)
        result["calibration"] = {"images": len(calib), "from": calib_from}
    else:
        return fp32
    result["parity"] = check_parity(model, final, images, precision=options.precision, min_agreement=None)
    return final


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
        publish(engine, out, make_card(engine, name=out.name, artefact_format="tensorrt",
                                       tensorrt_version=tensorrt_version(), parity=parity,
                                       extra={"built_from": onnx_path.name}, **card_args))
    return {"engine": str(out), "engine_card": str(card_path(out)), "engine_parity": parity,
            "trtexec": str(trtexec_file)}
