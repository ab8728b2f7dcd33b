"""Proxy-training presets: the paper's schedule and smaller ones that fit a CPU or the test suite.

``paper`` follows method.md §5 (WACV values). ``cpu-small`` keeps the same two-stage structure, scaled so a
search of several candidates on camvid-mini finishes in minutes on 2 CPU cores. ``test`` is tiny, for the test
suite only (its scores mean nothing). ``auto`` is not a preset: :func:`resolve_preset` picks one.

Measured on this project's 2-vCPU Zen 4 host, 1 torch thread, camvid-mini, deployed model timed at 180x240 with
ONNX Runtime (1 thread): ``cpu-small`` 11-19 CPU-seconds per candidate (stage 1 ~25%, stage 2 ~30%, validation
~15%, latency measurement ~20%, the rest cost counting and the controller); a whole ``--budget 8`` search used
133 CPU-seconds (8.5 min of wall time on a host loaded by other jobs, about 3 min when idle). ``test``: 4-8
CPU-seconds per candidate, dominated by exporting and timing the deployed model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from segfactory.factory.checks import check_types
from segfactory.factory.errors import InputError
from segfactory.factory.registry import Registry

AUTO = "auto"  # not a preset: resolve_preset picks one by device and dataset size
SCHEDULES = ("constant", "poly")
SMALL_DATASET = 100  # train images: at most this many (camvid-mini has 40) and auto picks cpu-small on a CPU


def _at_least(settings: Any, name: str, low: int, optional: bool = False) -> None:
    value = getattr(settings, name)
    if (value is not None or not optional) and value < low:
        raise InputError(f"proxy setting {name}={value} must be >= {low}" + (" or null" if optional else ""))


@dataclass(frozen=True)
class ProxySettings:
    crop: tuple[int, int] = (320, 320)  # stage-1 cached crops and stage-2 crops (H, W)
    scale: tuple[float, float] = (0.7, 1.4)  # random scale before the crop
    cache_size: int = 1000  # stage-1 cached crops
    stage1_epochs: int = 5
    stage1_batch: int = 32
    stage1_lr: float = 7e-3
    stage1_polyak: float = 0.9
    stage2_epochs: int = 5
    stage2_batch: int = 32
    stage2_steps: int | None = None  # cap on steps per stage-2 epoch; None: whole epochs
    stage2_enc_lr: float = 5e-4
    stage2_dec_lr: float = 2e-3
    stage2_polyak: float = 0.99
    stage2_schedule: str = "constant"  # constant (the paper) | poly: (1 - step / steps) ** 0.9 over stage 2
    weight_decay: float = 1e-5
    grad_clip: float = 3.0
    val_fraction: float = 0.1  # of the train split, held out in contiguous blocks of frames
    val_blocks: int = 3  # blocks per recording (CamVid: per video; Cityscapes: per city)
    val_gap: int = 1  # frames on each side of a held-out block left out of training (near copies)
    val_max_images: int | None = None  # cap on held-out frames (keeps validation cheap on large datasets)
    val_long_side: int | None = None  # resize held-out images so the longer side is this; None: as stored
    val_batch: int = 10
    time_limit_s: float | None = None  # per candidate
    max_proxy_macs: int | None = None  # proxy model's multiply-adds at the crop size; larger ones are rejected
    workers: int = 4  # stage-2 loader processes

    def __post_init__(self) -> None:
        check_types(self, "proxy setting")  # --proxy-set values arrive as JSON
        for name in ("cache_size", "stage1_batch", "stage2_batch", "val_blocks", "val_batch"):
            _at_least(self, name, 1)
        for name in ("stage1_epochs", "stage2_epochs", "workers", "val_gap", "weight_decay"):
            _at_least(self, name, 0)
        for name in ("stage2_steps", "val_max_images", "max_proxy_macs"):
            _at_least(self, name, 1, optional=True)
        _at_least(self, "val_long_side", 16, optional=True)
        for name in ("stage1_lr", "stage2_enc_lr", "stage2_dec_lr", "grad_clip", "time_limit_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InputError(f"proxy setting {name}={value} must be > 0")
        for name in ("stage1_polyak", "stage2_polyak"):
            if not 0 <= getattr(self, name) < 1:
                raise InputError(f"proxy setting {name}={getattr(self, name)} must be in [0, 1)")
        if not 0 < self.val_fraction < 1:
            raise InputError(f"proxy setting val_fraction={self.val_fraction} must be in (0, 1)")
        if self.stage2_schedule not in SCHEDULES:
            raise InputError(f"proxy setting stage2_schedule={self.stage2_schedule!r} is not one of {SCHEDULES}")
        if min(self.crop) < 16:
            raise InputError(f"proxy setting crop={self.crop} must be HxW with sides >= 16")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise InputError(f"proxy setting scale={list(self.scale)} must be [low, high] with 0 < low <= high")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop"], d["scale"] = list(self.crop), list(self.scale)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProxySettings:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown proxy setting(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        for key in ("crop", "scale"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def with_(self, **changes: Any) -> ProxySettings:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise InputError(f"unknown proxy setting(s): {', '.join(sorted(unknown))}")
        for key in ("crop", "scale"):
            if key in changes:
                changes[key] = tuple(changes[key])
        try:
            return replace(self, **changes)
        except TypeError as e:
            raise InputError(f"bad proxy setting: {e}") from None


PRESETS: Registry[ProxySettings] = Registry("preset")
PRESETS.register("paper", ProxySettings(), help="the paper's schedule (method.md)")
PRESETS.register("cpu-small", ProxySettings(
    crop=(128, 160), scale=(0.75, 1.25), cache_size=48, stage1_epochs=2, stage1_batch=12,
    stage2_epochs=2, stage2_batch=8, stage2_steps=4, val_fraction=0.2, val_blocks=4, val_max_images=16,
    val_gap=0, val_long_side=240,
    val_batch=8, time_limit_s=150.0, max_proxy_macs=400_000_000, workers=0,
), help="the camvid-mini demo, or a cheap rung on 2 CPU cores")
PRESETS.register("cpu-full", ProxySettings(
    crop=(192, 256), scale=(0.5, 1.0), cache_size=128, stage1_epochs=2, stage1_batch=16,
    stage2_epochs=3, stage2_batch=8, stage2_steps=15, stage2_schedule="poly", val_fraction=0.2, val_blocks=4,
    val_gap=1, val_long_side=240, val_batch=8, time_limit_s=300.0, max_proxy_macs=1_000_000_000, workers=0,
), help="a real dataset on 2 CPU cores")
PRESETS.register("test", ProxySettings(
    crop=(64, 64), scale=(1.0, 1.0), cache_size=8, stage1_epochs=1, stage1_batch=4, stage2_epochs=1,
    stage2_batch=4, stage2_steps=2, val_fraction=0.2, val_blocks=2, val_gap=0, val_long_side=64, val_batch=8,
    time_limit_s=60.0, max_proxy_macs=None, workers=0,
), help="tiny, for the test suite (its scores mean nothing)")


def preset_names() -> list[str]:
    """What ``--preset`` accepts: ``auto`` and every registered preset."""
    return [AUTO, *PRESETS.names()]


def preset_help() -> str:
    """``--preset``'s help, from the registry."""
    listed = "; ".join(f"{name}: {PRESETS.help(name)}" for name in PRESETS)
    return (f"Proxy-training schedule. {listed}; {AUTO}: paper on CUDA, else cpu-full, or cpu-small for a dataset "
            f"of at most {SMALL_DATASET} training images.")


def resolve_preset(name: str, device: str, train_images: int | None = None) -> tuple[str, ProxySettings]:
    """(concrete preset name, settings); ``auto`` -> ``paper`` on CUDA; on a CPU ``cpu-full`` for a real dataset
    and ``cpu-small`` for one of at most :data:`SMALL_DATASET` training images (camvid-mini)."""
    if name == AUTO:
        if device == "cuda":
            name = "paper"
        else:
            name = "cpu-small" if train_images is not None and train_images <= SMALL_DATASET else "cpu-full"
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r} (one of {', '.join(preset_names())})")
    return name, PRESETS[name]
