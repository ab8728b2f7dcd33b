"""CamVid training under a CPU budget: arch0, arch1 and torchvision's LRASPP-MobileNetV3-Large, one recipe.

    python benchmarks/scripts/camvid_train.py --minutes 60 [--data camvid:PATH] [--out runs/camvid_train]

Each model gets the same training wall-clock budget (``--minutes`` each, validation not counted) with the
same recipe: Adam (encoder/backbone 5e-4, decoder/head 2e-3, weight decay 1e-5), batch 8, random scale
0.5-2, random crop, flip, gradient clipping 3.0 per part. arch0/arch1 use the released configuration (agg 64,
sep_repeats 2) and the bundled ImageNet encoder weights, loss at the decoder's native resolution (stride 4);
LRASPP has no pretrained weights offline (torchvision downloads them), so it starts from random weights, loss
at its output resolution. Validation (val split, full 360x480) after every epoch and when the budget ends;
the table reports the final and the best val mIoU (select on val only; the test split is not used).

Resumable: every model's state is saved after each epoch under OUT/MODEL/; rerunning continues, and a larger
``--minutes`` extends the budget. Prints a table and writes OUT/camvid_train.json with the machine description.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _common import default_data, machine

FORMAT = "segfactory.bench-camvid-train/1"
MODELS = ("arch0", "arch1", "lraspp_mobilenet_v3_large")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build(name: str, num_classes: int, class_names: tuple[str, ...]):
    """(model, normalisation namespace, [encoder params, decoder params], forward(x) -> logits for the loss)."""
    if name in ("arch0", "arch1"):
        from segfactory.factory.config import ModelConfig
        from segfactory.factory.model import build_model
        from segfactory.factory.zoo import ZOO

        config = ModelConfig.create(num_classes, class_names=class_names)  # the released configuration
        model = build_model(ZOO[name], config)
        parts = [list(model.encoder.parameters()), list(model.decoder.parameters())]
        return model, config, parts, lambda x: model(x, native=True)
    if name == "lraspp_mobilenet_v3_large":
        from torchvision.models.segmentation import lraspp_mobilenet_v3_large

        model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
        norm = SimpleNamespace(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        parts = [list(model.backbone.parameters()), list(model.classifier.parameters())]
        return model, norm, parts, lambda x: model(x)["out"]
    raise SystemExit(f"unknown model {name!r}: use {', '.join(MODELS)}")


class Predictor:
    """The evaluation protocol (uint8 (N, H, W, 3) -> (N, H, W) labels) for any of the three models."""

    def __init__(self, model, norm, forward) -> None:
        self.model, self.norm, self.forward = model, norm, forward

    def __call__(self, images):
        import torch
        from segfactory.factory.ops import resize
        from segfactory.factory.transforms import normalize

        self.model.eval()
        with torch.inference_mode():
            logits = self.forward(normalize(images, self.norm.mean, self.norm.std))
            logits = resize(logits, images.shape[1:3])
        return logits.argmax(1).numpy()


def run_model(name: str, args, out: Path, console) -> dict[str, Any]:
    import torch
    from segfactory.factory.datasets import open_dataset
    from segfactory.factory.evaluate import evaluate
    from segfactory.factory.io import atomic_write
    from segfactory.factory.model import count_params
    from segfactory.factory.training import _iterate, make_train_loader, seg_loss, set_epoch
    from torch import nn

    train_ds = open_dataset(args.data, "train")
    val_ds = open_dataset(args.data, "val")
    if args.val_images:
        val_ds.images, val_ds.masks = val_ds.images[: args.val_images], val_ds.masks[: args.val_images]
    recipe = {"crop": list(args.crop), "batch_size": args.batch_size, "encoder_lr": 5e-4, "decoder_lr": 2e-3,
              "weight_decay": 1e-5, "grad_clip": 3.0, "scale": [0.5, 2.0], "seed": args.seed,
              "threads": args.threads, "val_images": len(val_ds)}
    torch.manual_seed(args.seed)
    model, norm, parts, forward = build(name, train_ds.num_classes, tuple(train_ds.class_names))
    optimizer = torch.optim.Adam([{"params": parts[0], "lr": recipe["encoder_lr"]},
                                  {"params": parts[1], "lr": recipe["decoder_lr"]}],
                                 weight_decay=recipe["weight_decay"])
    loader = make_train_loader(train_ds, norm, tuple(args.crop), args.batch_size, args.workers, args.seed)
    state_path = out / name / "state.pt"
    state = {"epoch": 0, "train_s": 0.0, "images": 0, "history": []}
    if state_path.exists():
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
        if saved["recipe"] != recipe:
            raise SystemExit(f"{state_path} was made with another recipe {saved['recipe']}; use another --out")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = {k: saved[k] for k in state}
        console.print(f"{name}: resuming after epoch {state['epoch']} ({state['train_s'] / 60:.1f} min trained)")
    budget_s = args.minutes * 60.0

    def save() -> None:
        data = dict(state, recipe=recipe, model=model.state_dict(), optimizer=optimizer.state_dict())
        atomic_write(state_path, lambda p: torch.save(data, p))

    while state["train_s"] < budget_s:
        model.train()
        set_epoch(loader, state["epoch"])
        t0 = time.perf_counter()
        steps, loss_sum = 0, 0.0
        for images, masks in _iterate(loader):
            loss = seg_loss(forward(images), masks, train_ds.ignore_index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for p in parts:
                nn.utils.clip_grad_norm_(p, recipe["grad_clip"])
            optimizer.step()
            steps += 1
            loss_sum += float(loss.detach())
            state["images"] += images.shape[0]
            if state["train_s"] + time.perf_counter() - t0 >= budget_s:
                break
        state["train_s"] += time.perf_counter() - t0
        state["epoch"] += 1
        t1 = time.perf_counter()
        val = evaluate(Predictor(model, norm, forward), val_ds, progress=False)
        state["history"].append({"epoch": state["epoch"], "steps": steps, "loss": loss_sum / max(steps, 1),
                                 "train_s": state["train_s"], "images": state["images"], "val_miou": val["miou"],
                                 "val_macc": val["macc"], "val_s": time.perf_counter() - t1})
        save()
        console.print(f"{name}: epoch {state['epoch']} ({steps} steps) loss {loss_sum / max(steps, 1):.3f} "
                      f"val mIoU {100 * val['miou']:.2f}%  [{state['train_s'] / 60:.1f}/{args.minutes:.1f} min]",
                      soft_wrap=True)
    history = state["history"]
    return {
        "model": name,
        "params": count_params(model),
        "pretrained": "bundled ImageNet encoder (TFLite MobileNetV2)" if name != MODELS[2]
        else "none (no offline weights; random init)",
        "train_min": state["train_s"] / 60,
        "epochs": state["epoch"],
        "images_seen": state["images"],
        "val_miou": history[-1]["val_miou"] if history else None,
        "best_val_miou": max(h["val_miou"] for h in history) if history else None,
        "latency_ms_ort_cpu_360x480": None,  # filled by measure_latency (--latency)
        "history": history,
        "_model": model,
    }


def measure_latency(results: list[dict[str, Any]], out: Path, threads: int, seconds: float, console) -> dict:
    """ONNX Runtime CPU latency at 360x480, batch 1, the models interleaved round by round (measuring-here.md)."""
    import torch
    from segfactory.benchmarks.harness import measure_interleaved
    from segfactory.benchmarks.runners import OrtRunner
    from segfactory.export.onnx import export_onnx

    class _Logits(torch.nn.Module):
        """LRASPP returns a dict; export its logits only."""

        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x)["out"]

    runners = []
    for r in results:
        model = r["_model"].eval()
        module = model if r["model"] in ("arch0", "arch1") else _Logits(model)
        path = export_onnx(module, out / r["model"] / "model.onnx", input_size=(360, 480))
        runners.append(OrtRunner(path, threads=threads, name=r["model"]))
    console.print(f"measuring ONNX Runtime latency, {threads} thread(s), interleaved ...")
    measured = measure_interleaved(runners, min_seconds=seconds, rounds=10)
    for r, m in zip(results, measured):
        r["latency_ms_ort_cpu_360x480"] = m["median_ms"]
        r["latency"] = {k: m[k] for k in ("median_ms", "round_median_min_ms", "round_median_max_ms", "threads",
                                          "iterations", "backend", "latency_source")}
    return {"threads": threads, "rounds": measured[0]["rounds"] if measured else 0}


def _latency_cell(r: dict[str, Any]) -> str:
    if r["latency_ms_ort_cpu_360x480"] is None:
        return "-"
    lat = r["latency"]
    return f"{lat['median_ms']:.1f} ({lat['round_median_min_ms']:.1f}-{lat['round_median_max_ms']:.1f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, required=True, help="Training budget per model (wall clock).")
    parser.add_argument("--data", default=default_data(), help="Data spec (default: ../shared/data/camvid).")
    parser.add_argument("--out", default="runs/camvid_train", help="Output folder (resumable).")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--crop", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--val-images", type=int, default=0, help="Validate on the first N val images (0: all).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", action="store_true",
                        help="Also export each model to ONNX and time it with ONNX Runtime at 360x480.")
    parser.add_argument("--latency-threads", type=int, default=1)
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="Timed seconds per model.")
    args = parser.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table
    from segfactory.factory.errors import SegfactoryError
    from segfactory.factory.io import atomic_write_json

    torch.set_num_threads(args.threads)
    console = Console(stderr=True)
    out = Path(args.out)
    results = []
    try:
        for name in args.models:
            results.append(run_model(name, args, out, console))
        latency = measure_latency(results, out, args.latency_threads, args.latency_seconds, console) \
            if args.latency else None
    except SegfactoryError as e:
        console.print(f"Error: {e}")
        sys.exit(e.exit_code)
    for r in results:
        r.pop("_model")
    doc = {"format": FORMAT, "machine": machine(), "data": args.data, "minutes_per_model": args.minutes,
           "recipe_note": __doc__.split("\n\n")[1].replace("\n", " "), "latency": latency, "results": results}
    atomic_write_json(out / "camvid_train.json", doc)
    table = Table(title=f"CamVid val, {args.minutes:g} min CPU training per model ({doc['machine']['cpu']})")
    for col in ("model", "params", "pretrained", "train min", "epochs", "val mIoU %", "best val mIoU %",
                "ORT CPU ms 360x480 (round medians)"):
        table.add_column(col, justify="left" if col in ("model", "pretrained") else "right")
    for r in results:
        table.add_row(r["model"], f"{r['params']:,}", r["pretrained"].split(" ")[0], f"{r['train_min']:.1f}",
                      str(r["epochs"]), f"{100 * r['val_miou']:.2f}", f"{100 * r['best_val_miou']:.2f}",
                      _latency_cell(r))
    Console(width=max(Console().width, 140)).print(table)
    console.print(f"wrote {out / 'camvid_train.json'}")


if __name__ == "__main__":
    main()
