"""``model.pt`` checkpoints: weights + genotype + ModelConfig + metrics + training configuration.

Plain dicts, tensors and numbers only, so ``torch.load(path, weights_only=True)`` reads them; written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError

FORMAT = "segfactory.checkpoint/1"


def save_checkpoint(path: str | Path, model, *, metrics: dict[str, Any], train_config: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights (on the CPU) and what rebuilds it to ``path``, atomically."""
    import torch
    from segfactory.factory.io import atomic_write

    data = {
        "format": FORMAT,
        "arch": model.arch.to_dict(),  # a genotype or a reference model (segfactory.factory.reference)
        "genotype": model.genotype.to_dict() if model.genotype is not None else None,
        "genotype_key": model.arch.key(),
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()},
        "metrics": metrics,
        "train_config": train_config,
    }
    if extra:
        data["extra"] = extra
    return atomic_write(path, lambda p: torch.save(data, p))


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """Load a checkpoint file's dict (weights_only), raising :class:`InputError` one-liners on any problem."""
    from segfactory.factory.io import load_torch_file

    path = Path(path)
    data = load_torch_file(path, what)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{what} {path} is not a {FORMAT} file (format: {found!r})")
    for key in ("model_config", "state_dict"):
        if key not in data:
            raise InputError(f"{what} {path} lacks {key!r}")
    if data.get("arch") is None and data.get("genotype") is None:
        raise InputError(f"{what} {path} lacks 'arch' (or 'genotype')")
    return data


def load_checkpoint(path: str | Path, device: str = "cpu"):
    """(model in eval mode on ``device``, the checkpoint's other fields); the model is a genotype's or a
    reference model's, as the checkpoint records."""
    from segfactory.factory.config import ModelConfig
    from segfactory.factory.model import build_model
    from segfactory.factory.zoo import arch_from_dict

    data = read_checkpoint(path)
    try:
        arch = arch_from_dict(data.get("arch") or data["genotype"])
        config = ModelConfig.from_dict(data["model_config"])
    except InputError as e:
        raise InputError(f"checkpoint {path}: {e}") from None
    model = build_model(arch, config, load_weights=False)
    try:
        model.load_state_dict(data["state_dict"], strict=True)
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [""])
        detail = " ".join(line.strip() for line in first[:2])[:300]
        raise InputError(f"checkpoint {path}: weights do not match its architecture/config: {detail}") from None
    meta = {k: v for k, v in data.items() if k != "state_dict"}
    return model.to(device).eval(), meta
