"""The evaluation loop and label-map prediction. Both take a *predictor*:

a callable ``predictor(images) -> labels`` with ``images`` uint8 (N, H, W, 3) RGB and ``labels`` an integer
array (N, H, W) at the same H, W. :class:`TorchPredictor` wraps a :class:`SegModel`; the export package's
``OnnxPredictor`` follows the same protocol and is handed in by its caller (``segfactory eval``), since factory
imports no other package. Evaluation runs at each image's full resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from segfactory.factory.errors import InputError, RunError


class Predictor(Protocol):
    def __call__(self, images: np.ndarray) -> np.ndarray: ...


class TorchPredictor:
    """Label maps from a :class:`SegModel` in eval mode, inputs normalised with ``model.config.mean/std``."""

    def __init__(self, model, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.num_classes = model.config.num_classes

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch
        from segfactory.factory.transforms import normalize

        x = normalize(images, self.model.config.mean, self.model.config.std).to(self.device)
        with torch.inference_mode():
            logits = self.model(x)  # (N, K, H, W) at the input size
        return logits.argmax(dim=1).cpu().numpy()


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True, disable=not enabled)


def _batches(dataset, batch_size: int):
    """Consecutive items grouped into batches of equal image size."""
    batch: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(len(dataset)):
        image, mask = dataset[i]
        if batch and (len(batch) == batch_size or batch[0][0].shape != image.shape):
            yield batch
            batch = []
        batch.append((image, mask))
    if batch:
        yield batch


def evaluate(predictor: Callable[[np.ndarray], np.ndarray], dataset, *, batch_size: int = 1,
             progress: bool = True) -> dict[str, Any]:
    """Metrics of ``predictor`` on every item of ``dataset`` (see :func:`metrics.summarize`) + ``num_images``."""
    from segfactory.factory.metrics import ConfusionMatrix

    if len(dataset) == 0:
        raise InputError(f"{dataset.spec} {dataset.split} holds no images")
    cm = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
    with _progress(progress) as bar:
        task = bar.add_task(f"eval {dataset.split}", total=len(dataset))
        for batch in _batches(dataset, max(1, batch_size)):
            images = np.stack([b[0] for b in batch])
            labels = np.asarray(predictor(images))
            if labels.shape != images.shape[:3]:
                raise RunError(f"the predictor returned labels of shape {labels.shape} for images {images.shape}")
            for (_, mask), pred in zip(batch, labels):
                cm.update(pred, mask)
            bar.advance(task, len(batch))
    result = cm.summarize()
    result["num_images"] = len(dataset)
    result["class_names"] = list(dataset.class_names)
    return result


def list_input_images(path: str | Path) -> list[Path]:
    """``path`` itself if it is an image file, else the images in folder ``path`` (sorted, unique stems)."""
    from segfactory.factory.datasets import IMAGE_SUFFIXES, list_images

    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"input {path} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        return [path]
    if not path.is_dir():
        raise InputError(f"input {path} does not exist")
    files = list_images(path)
    if not files:
        raise InputError(f"input folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over the image: uint8 (H, W, 3)."""
    colours = palette[labels].astype(np.float32)
    return (image.astype(np.float32) * (1 - alpha) + colours * alpha).round().clip(0, 255).astype(np.uint8)


def write_label_png(path: Path, labels: np.ndarray) -> None:
    """A single-channel PNG whose pixel values are the class ids (8-bit, or 16-bit above 255 classes)."""
    from PIL import Image
    from segfactory.factory.io import atomic_write

    if labels.max(initial=0) < 256:
        img = Image.fromarray(labels.astype(np.uint8))  # mode L
    else:
        img = Image.fromarray(labels.astype(np.uint16))
    atomic_write(path, lambda p: img.save(p, format="PNG"))


def predict_files(predictor: Callable[[np.ndarray], np.ndarray], inputs: str | Path, out: str | Path, *,
                  overlay_palette: np.ndarray | None = None, progress: bool = True) -> list[Path]:
    """Write ``OUT/STEM.png`` label maps for the image(s) ``inputs`` names (and ``OUT/overlay/STEM.png`` colour
    overlays with a palette). Returns the label files written."""
    from PIL import Image
    from segfactory.factory.datasets import read_image
    from segfactory.factory.errors import SegfactoryError
    from segfactory.factory.io import atomic_write, check_writable

    files = list_input_images(inputs)
    out = Path(out)
    check_writable(out, "output", folder=True)
    for f in files:  # every input is read once before anything is written: a bad one leaves no partial output
        read_image(f)
    written: list[Path] = []
    with _progress(progress) as bar:
        task = bar.add_task("predict", total=len(files))
        for f in files:
            image = read_image(f)
            try:
                labels = np.asarray(predictor(image[None]))[0]
                if labels.shape != image.shape[:2]:
                    raise RunError(f"the predictor returned labels of shape {labels.shape} for {f} "
                                   f"({image.shape[:2]})")
            except SegfactoryError as e:
                if written:
                    raise type(e)(f"{e} (label maps of the first {len(written)} of {len(files)} images were "
                                  f"written to {out})") from None
                raise
            target = out / f"{f.stem}.png"
            write_label_png(target, labels)
            written.append(target)
            if overlay_palette is not None:
                blended = Image.fromarray(overlay(image, labels, overlay_palette))
                atomic_write(out / "overlay" / f"{f.stem}.png", lambda p, im=blended: im.save(p, format="PNG"))
            bar.advance(task)
    return written


def predict_checkpoint(checkpoint: str | Path, inputs: str | Path, out: str | Path, *, overlay: bool = False,
                       device: str = "cpu", progress: bool = True) -> list[Path]:
    """Load ``checkpoint`` and write label PNGs (and overlays) for ``inputs``: what ``segfactory predict`` runs."""
    from segfactory.factory.checkpoint import load_checkpoint
    from segfactory.factory.datasets import (
        CAMVID_CLASSES,
        CAMVID_PALETTE,
        CITYSCAPES_CLASSES,
        CITYSCAPES_PALETTE,
        palette_for,
    )

    list_input_images(inputs)  # fail on a bad input before loading the model
    model, _ = load_checkpoint(checkpoint, device=device)
    palette = None
    if overlay:
        names = tuple(model.config.class_names)
        known = {CAMVID_CLASSES: CAMVID_PALETTE, CITYSCAPES_CLASSES: CITYSCAPES_PALETTE}
        palette = palette_for(model.config.num_classes, known.get(names, ()))
    return predict_files(TorchPredictor(model, device), inputs, out, overlay_palette=palette, progress=progress)


def open_predictor(checkpoint: str | Path | None, model_file: str | Path | None, device: str = "cpu",
                   open_model: Callable[[Path], Predictor] | None = None):
    """(predictor, num_classes or None, class names) from a checkpoint, or from a model file opened by
    ``open_model`` (``segfactory eval`` passes export's ONNX Runtime predictor: factory cannot open one itself).
    """
    if (checkpoint is None) == (model_file is None):
        raise InputError("pass exactly one of --checkpoint FILE.pt and --model FILE.onnx")
    if checkpoint is not None:
        from segfactory.factory.checkpoint import load_checkpoint

        model, _ = load_checkpoint(checkpoint, device=device)
        return TorchPredictor(model, device), model.config.num_classes, tuple(model.config.class_names)
    path = Path(model_file)
    if not path.is_file():
        raise InputError(f"model file {path} does not exist")
    if open_model is None:
        raise RunError(f"cannot open model file {path} here: pass open_model (segfactory eval opens ONNX models "
                       "with segfactory.export's predictor)")
    predictor = open_model(path)
    return predictor, getattr(predictor, "num_classes", None), tuple(getattr(predictor, "class_names", ()) or ())


def evaluate_model(data: str, split: str, *, checkpoint: str | Path | None = None,
                   model_file: str | Path | None = None, device: str = "cpu", batch_size: int = 1,
                   num_classes: int | None = None, ignore_index: int | None = None,
                   progress: bool = True, open_model: Callable[[Path], Predictor] | None = None) -> dict[str, Any]:
    """What ``segfactory eval`` runs: open the model and the dataset, evaluate, add where they came from.

    ``open_model`` opens ``model_file`` (see :func:`open_predictor`); a checkpoint needs none.
    """
    from segfactory.factory.datasets import open_dataset

    predictor, model_classes, _ = open_predictor(checkpoint, model_file, device, open_model)
    if num_classes is not None and model_classes is not None and num_classes != model_classes:
        raise InputError(f"--num-classes {num_classes} differs from the model's {model_classes} classes")
    k = model_classes if model_classes is not None else num_classes
    from segfactory.factory.datasets import parse_spec

    kind, _ = parse_spec(data)
    if kind == "folder":
        dataset = open_dataset(data, split, num_classes=k, ignore_index=ignore_index)
    else:
        dataset = open_dataset(data, split)
        if k is not None and k != dataset.num_classes:
            raise InputError(f"the model predicts {k} classes but {data} has {dataset.num_classes}")
    result = evaluate(predictor, dataset, batch_size=batch_size, progress=progress)
    result["data"] = data
    result["split"] = split
    result["model"] = str(checkpoint if checkpoint is not None else model_file)
    return result
