"""The resumable training run behind ``segfactory train``.

A run directory holds ``model.pt`` (the final weights: the averaged ones where Polyak averaging is on),
``last.pt`` (everything ``--resume`` needs: weights, optimiser, averaging, RNG state, epochs done, wall time
spent, history) and ``metrics.json`` (the history). ``last.pt`` and ``metrics.json`` are rewritten atomically
after every epoch, so a killed run loses at most the epoch in progress. A time budget (``minutes``) counts the
wall time of every resumed part, validation included; the learning rate decays on the elapsed fraction of it,
training stops early enough for the final validation to fit, and the run always ends with that validation.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segfactory.factory.errors import InputError, RunError
from segfactory.factory.training.config import RUNTIME_FIELDS, TrainConfig
from segfactory.factory.training.data import iterate, make_train_loader
from segfactory.factory.training.loop import Trainer

STATE_FORMAT = "segfactory.train-state/2"
METRICS_FORMAT = "segfactory.train-metrics/1"


def _run_files(out: Path) -> dict[str, Path]:
    return {"model": out / "model.pt", "last": out / "last.pt", "metrics": out / "metrics.json"}


def _check_resumable(state: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    old, new = state["train_config"], cfg.to_dict()
    for name, value in new.items():
        if name not in RUNTIME_FIELDS and old.get(name) != value:
            raise InputError(
                f"--resume: {path} was trained with {name}={old.get(name)!r}, this run asks for {value!r}; "
                f"repeat the original settings (only {', '.join('--' + f.replace('_', '-') for f in RUNTIME_FIELDS)} "
                "may change)")


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


def check_training_memory(arch, config, cfg: TrainConfig) -> None:
    """Refuse (InputError) a run whose batches would not fit in the device's memory (see factory.memory)."""
    from segfactory.factory.memory import check_fits, training_bytes
    from segfactory.factory.model import build_model

    s = cfg.settings
    need = training_bytes(lambda: build_model(arch, config, load_weights=False), s.crop, s.batch_size, cfg.workers)
    check_fits(need, cfg.device, f"training with batches of {s.batch_size} crops of {s.crop[0]}x{s.crop[1]}",
               "lower --crop or --batch-size")


def _open_out(out: Path, resume: bool) -> dict[str, Path]:
    from segfactory.factory.io import check_writable

    files = _run_files(out)
    check_writable(out, "--out", folder=True)
    present = [p.name for p in files.values() if p.exists()]
    if present and not resume:
        raise InputError(f"{out} already holds a run ({', '.join(present)}); pass --resume to continue it "
                         "or choose another --out")
    if resume and not files["last"].exists():
        raise InputError(f"--resume: {files['last']} does not exist, so there is nothing to resume")
    return files


def _datasets(cfg: TrainConfig):
    from segfactory.factory.datasets import open_dataset

    train_ds = open_dataset(cfg.data, cfg.train_split, num_classes=cfg.num_classes, ignore_index=cfg.ignore_index)
    val_ds = open_dataset(cfg.data, cfg.val_split, num_classes=cfg.num_classes, ignore_index=cfg.ignore_index)
    if cfg.val_images is not None:
        val_ds.images, val_ds.masks = val_ds.images[: cfg.val_images], val_ds.masks[: cfg.val_images]
    return train_ds, val_ds


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True,
          on_event=None) -> dict[str, Any]:
    """Train ``cfg.arch`` on ``cfg.data`` into run directory ``out``; returns the metrics.json content.

    ``on_event`` (optional) receives ``{"kind": "epoch"|"step", ...}`` dicts for a caller's progress view.
    """
    from segfactory.factory.config import ModelConfig
    from segfactory.factory.io import load_torch_file
    from segfactory.factory.model import build_model, config_for
    from segfactory.factory.zoo import resolve_arch

    out = Path(out)
    files = _open_out(out, resume)
    arch = resolve_arch(cfg.arch)
    train_ds, val_ds = _datasets(cfg)
    config = config_for(arch, ModelConfig.create(train_ds.num_classes, cfg.agg_size, cfg.sep_repeats,
                                                 cfg.encoder_weights, tuple(train_ds.class_names)))
    check_training_memory(arch, config, cfg)  # before any image is read: a bad --crop must not take the host down
    train_ds.check_sizes()
    val_ds.check_sizes()
    state = None
    if resume:
        state = load_torch_file(files["last"], "--resume: training state")
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise InputError(f"--resume: {files['last']} is not a {STATE_FORMAT} file")
        _check_resumable(state, cfg, files["last"])
        if state["arch"] != arch.to_dict():
            raise InputError(f"--resume: {files['last']} holds another architecture than {cfg.arch!r}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    model = build_model(arch, config, load_weights=state is None).to(cfg.device)
    s = cfg.settings
    loader = make_train_loader(train_ds, config, s.crop, s.batch_size, cfg.workers, cfg.seed, s.scale,
                               flip=s.flip, pin_memory=cfg.device == "cuda")
    trainer = Trainer(model, cfg, loader, val_ds, train_ds.ignore_index, progress=progress, on_event=on_event)
    if state is not None:
        model.load_state_dict(state["model"])
        trainer.load_state_dict(state)
        _set_rng_state(state["rng"])

    def save(epoch_state: dict[str, Any]) -> None:
        from segfactory.factory.io import atomic_write, atomic_write_json

        last = {"format": STATE_FORMAT, "train_config": cfg.to_dict(), "arch": arch.to_dict(),
                "model_config": config.to_dict(), "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "rng": _rng_state(), **epoch_state}
        atomic_write(files["last"], lambda p: torch.save(last, p))
        atomic_write_json(files["metrics"], metrics_doc(cfg, arch, config, trainer.history, trainer.elapsed_s()))

    trainer.run(save)
    return finish(files, cfg, arch, config, model, trainer)


def metrics_doc(cfg: TrainConfig, arch, config, history: list[dict[str, Any]], elapsed_s: float) -> dict[str, Any]:
    validated = [h for h in history if h["val"] is not None]
    last = (history[-1]["val"] or {}) if history else {}
    best = max(validated, key=lambda h: h["val"]["miou"]) if validated else None
    return {"format": METRICS_FORMAT, "arch": cfg.arch, "genotype_key": arch.key(), "arch_spec": arch.to_dict(),
            "model_config": config.to_dict(), "train_config": cfg.to_dict(), "recipe": cfg.settings.to_dict(),
            "epochs_done": len(history), "elapsed_s": elapsed_s, "final": last,
            "best_epoch": best["epoch"] if best else None, "history": history}


def finish(files: dict[str, Path], cfg: TrainConfig, arch, config, model, trainer: Trainer) -> dict[str, Any]:
    """Write model.pt (once the schedule is complete) and the final metrics.json."""
    from segfactory.factory.checkpoint import save_checkpoint
    from segfactory.factory.io import atomic_write_json

    history = trainer.history
    if not history:
        raise RunError("no epoch was trained")
    doc = metrics_doc(cfg, arch, config, history, trainer.elapsed_s())
    final = dict(history[-1]["val"] or {}, epoch=history[-1]["epoch"])
    if trainer.trained_now or not files["model"].exists():
        save_checkpoint(files["model"], model.cpu(), metrics=final, train_config=cfg.to_dict(),
                        extra={"history": history, "dataset": cfg.data, "recipe": cfg.settings.to_dict()})
    atomic_write_json(files["metrics"], doc)
    return doc


__all__ = ["STATE_FORMAT", "TrainConfig", "check_training_memory", "iterate", "train"]
