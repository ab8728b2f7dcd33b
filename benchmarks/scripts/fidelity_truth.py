"""Ground truth for the proxy-fidelity benchmark: 14 genotypes trained longer, scored on CamVid val.

    python benchmarks/scripts/fidelity_truth.py --minutes 120 [--data camvid:PATH] [--out runs/fidelity]

The genotypes are arch0, arch1 and the first genotype of ``segfactory arch sample --seed S`` for S = 200..211.
Each is trained in the deployed configuration (agg 64, sep_repeats 2, bundled ImageNet encoder) with ONE fixed
recipe for 8 epochs: AdamW lr 2e-3 (encoder and decoder), weight decay 1e-4, polynomial decay (power 0.9) per
step, batch 8, random scale 0.5-1.0 then 240x320 crops, horizontal flip, cross-entropy ignoring label 11,
gradient-norm clip 3.0 per part; then evaluated on val at full size, final epoch (not the best). Computed once and
reused for every proxy variant (``proxy_fidelity.py``). Resumable: each training is a ``segfactory train`` run
directory under OUT/truth/NAME (``--resume`` on rerun); ``--minutes`` bounds this invocation. Writes
OUT/truth.json (and ``benchmarks/results/fidelity_truth.json`` with ``--publish``).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from _common import default_data, machine

FORMAT = "segfactory.bench-fidelity-truth/1"
SEEDS = range(200, 212)
RECIPE = {"optimizer": "adamw", "encoder_lr": 2e-3, "decoder_lr": 2e-3, "weight_decay": 1e-4, "schedule": "poly",
          "poly_power": 0.9, "batch_size": 8, "scale": (0.5, 1.0), "crop": (240, 320), "grad_clip": 3.0,
          "epochs": 8, "seed": 0, "val_every": 0}  # the released model configuration (factory.config.RELEASED)


def genotypes() -> list[tuple[str, Any]]:
    """(name, Genotype) of the 14 ground-truth genotypes, in a fixed order."""
    from segfactory.factory.genotype import sample_genotype
    from segfactory.factory.zoo import ZOO

    return [("arch0", ZOO["arch0"]), ("arch1", ZOO["arch1"])] + [
        (f"seed{s}", sample_genotype(random.Random(s))) for s in SEEDS]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, required=True, help="Wall-clock bound of this invocation.")
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--out", default="runs/fidelity")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (TF32 off: the same FP32 arithmetic).")
    parser.add_argument("--only", default=None, help="Train only these names (comma-separated).")
    parser.add_argument("--publish", action="store_true", help="Also write benchmarks/results/fidelity_truth.json.")
    args = parser.parse_args(argv)

    from segfactory.factory.io import atomic_write_json
    from segfactory.factory.training import TrainConfig, train

    if args.device == "cuda":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    deadline = time.monotonic() + 60 * args.minutes
    out = Path(args.out)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    rows = []
    only = set(args.only.split(",")) if args.only else None
    for name, g in genotypes():
        if only is not None and name not in only:
            continue
        run = out / "truth" / name
        metrics = run / "metrics.json"
        done = metrics.is_file() and json.loads(metrics.read_text()).get("epochs_done") == RECIPE["epochs"]
        if not done:
            if time.monotonic() > deadline:
                print(f"out of time before {name}; rerun to continue", flush=True)
                break
            run.mkdir(parents=True, exist_ok=True)
            (run / "genotype.json").write_text(g.to_json() + "\n")
            cfg = TrainConfig(arch=str(run / "genotype.json"), data=args.data, workers=args.workers,
                              device=args.device, **RECIPE)
            print(f"training {name} ({g.key()}) for {RECIPE['epochs']} epochs", flush=True)
            t0 = time.monotonic()
            train(cfg, run, resume=(run / "last.pt").is_file(), progress=False)
            print(f"  {name}: {(time.monotonic() - t0) / 60:.1f} min", flush=True)
        doc = json.loads(metrics.read_text())
        final = doc["final"]
        rows.append({"name": name, "key": g.key(), "genotype": g.to_dict(), "val_miou": final["miou"],
                     "val_score": final["score"], "train_s": sum(h["train_s"] for h in doc["history"]),
                     "device": doc["train_config"].get("device", "cpu"),
                     "loss_per_epoch": [h["loss"] for h in doc["history"]]})
    result = {"format": FORMAT, "machine": machine(), "data": args.data, "device": args.device,
              "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in RECIPE.items()},
              "rows": rows, "complete": len(rows) == len(genotypes()) and only is None}
    atomic_write_json(out / "truth.json", result)
    if args.publish:
        atomic_write_json(Path(__file__).resolve().parents[1] / "results" / "fidelity_truth.json", result)
    print(f"\n{'name':<8} {'key':<13} {'val mIoU':>8} {'train min':>9}")
    for r in rows:
        print(f"{r['name']:<8} {r['key']:<13} {100 * r['val_miou']:>7.2f}% {r['train_s'] / 60:>9.1f}")
    if not result["complete"]:
        print("incomplete: rerun to continue")


if __name__ == "__main__":
    main()
