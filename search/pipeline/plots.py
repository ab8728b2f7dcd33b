"""The build report's plots (matplotlib, Agg): the search's front, the trained models, training curves, and a
strip of val images with ground truth and predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segfactory.search.limits import Limits
from segfactory.search.pipeline.options import PEER_MODEL
from segfactory.search.pipeline.state import BuildState


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    from segfactory.factory.io import atomic_write

    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    _plt().close(fig)
    return path


def _bench_ratio(state: BuildState, prefix: str) -> float | None:
    results = state.stages["bench"]["results"]
    ref = results[state.stages["bench"]["reference"]]["median_ms"]
    for name, r in results.items():
        if name.startswith(prefix) and (name.endswith(("fp32", "(untrained)"))):
            return r["median_ms"] / ref
    return None


def plot_front(state: BuildState, path: Path) -> Path | None:
    """Proxy score against latency ratio for every trained candidate; the pick, the limit, arch0, LR-ASPP."""
    from segfactory.search.pipeline.stages import search_dir
    from segfactory.search.report import pareto_front
    from segfactory.search.trials import load_trials

    trials, _ = load_trials(search_dir(state) / "trials.jsonl")
    pts = [t for t in trials if t.get("status") in ("ok", "early-stopped") and t.get("latency_ratio")
           and t.get("score") is not None]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for status, colour in (("ok", "tab:blue"), ("early-stopped", "tab:gray")):
        sel = [t for t in pts if t["status"] == status]
        ax.scatter([t["latency_ratio"] for t in sel], [t["score"] for t in sel], s=14, c=colour, label=status)
    front = pareto_front([{**t, "latency_ms": t["latency_ratio"]} for t in pts if t["status"] == "ok"])
    if front:
        ax.plot([t["latency_ms"] for t in front], [t["score"] for t in front], c="tab:blue", lw=0.8)
    pick = next(t for t in pts if t["index"] == state.stages["pick"]["trial"])
    ax.scatter([pick["latency_ratio"]], [pick["score"]], s=80, facecolors="none", edgecolors="red", label="pick")
    ax.axvline(1.0, c="k", ls=":", lw=1, label="arch0")
    lr = _bench_ratio(state, PEER_MODEL)
    if lr:
        ax.axvline(lr, c="tab:green", ls=":", lw=1, label="LR-ASPP")
    limit = Limits.of(state.options.search).max_latency_ratio  # the x axis is the ratio: its limit is drawn
    if limit is not None:
        ax.axvline(limit, c="red", ls="--", lw=1, label="limit")
    ax.set_xlabel("latency / arch0 (measured beside it)")
    ax.set_ylabel("proxy score (held-out part of train)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_trained(state: BuildState, path: Path) -> Path | None:
    """Val mIoU against latency ratio for every exported model and precision."""
    ev, results = state.stages["evaluate"], state.stages["bench"]["results"]
    ref = results[state.stages["bench"]["reference"]]["median_ms"]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, by_precision in ev.items():
        if name == "class_names":
            continue
        for precision, m in by_precision.items():
            b = results.get(f"{name} {precision}")
            if b:
                x = b["median_ms"] / ref
                ax.scatter([x], [100 * m["miou"]], s=40, marker="o" if precision == "fp32" else "s")
                ax.annotate(f"{name} {precision}", (x, 100 * m["miou"]), fontsize=7)
    ax.set_xlabel("latency / arch0 (interleaved)")
    ax.set_ylabel("val mIoU (%)")
    return _save(fig, path)


def plot_curves(state: BuildState, path: Path) -> Path | None:
    """Val mIoU per epoch of every model and recipe."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    drawn = False
    for name, by_recipe in state.stages["train"].items():
        for recipe, r in by_recipe.items():
            if recipe in ("chosen", "checkpoint"):
                continue
            doc = json.loads((state.out / r["dir"] / "metrics.json").read_text())
            pts = [(h["elapsed_s"] / 60, 100 * h["val"]["miou"]) for h in doc["history"] if h["val"]]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=f"{name} / {recipe}")
                drawn = True
    if not drawn:
        return None
    ax.set_xlabel("training minutes (validation included)")
    ax.set_ylabel("val mIoU (%)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_strip(state: BuildState, path: Path, count: int = 4) -> Path | None:
    """``count`` val images: the image, the ground truth, and each FP32 model's prediction, as overlays."""
    import numpy as np
    from segfactory.export.predictor import OnnxPredictor
    from segfactory.factory.datasets import open_dataset, palette_for
    from segfactory.factory.evaluate import overlay

    dataset = open_dataset(state.options.search.data, "val")
    palette = palette_for(dataset.num_classes, dataset.palette)
    models = [(n, state.out / p["fp32"]["file"]) for n, p in state.stages["export"].items()
              if n != "engines" and "fp32" in p]
    picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    plt = _plt()
    fig, axes = plt.subplots(len(picks), 2 + len(models), figsize=(2.6 * (2 + len(models)), 2.0 * len(picks)),
                             squeeze=False)
    predictors = [(n, OnnxPredictor(f)) for n, f in models]
    for row, i in enumerate(picks):
        image, mask = dataset[int(i)]
        shown = [("image", image), ("ground truth", overlay(image, np.where(mask == dataset.ignore_index, 0, mask),
                                                            palette))]
        shown += [(n, overlay(image, p(image[None])[0], palette)) for n, p in predictors]
        for col, (title, im) in enumerate(shown):
            ax = axes[row][col]
            ax.imshow(im)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=8)
    return _save(fig, path)


__all__ = ["Any", "plot_curves", "plot_front", "plot_strip", "plot_trained"]
