"""The build's report: ``report.md`` and a self-contained ``report.html`` (plots embedded), with the plots also
written as PNG files beside them. Everything here is read from the stages' results in ``build.json``."""

from __future__ import annotations

import base64
import html
import json
import platform
from pathlib import Path
from typing import Any

from segfactory.benchmarks.targets import target_class
from segfactory.search.pipeline.options import REFERENCE_MODELS
from segfactory.search.pipeline.reuse import reuse_note
from segfactory.search.pipeline.state import BuildState

DATA_LICENCE_NOTE = "See the model cards' `licences` field."


def _plots(state: BuildState) -> dict[str, Path]:
    from segfactory.search.pipeline.plots import plot_curves, plot_front, plot_strip, plot_trained

    out = state.out
    plots = {"front": plot_front(state, out / "front.png"), "trained": plot_trained(state, out / "trained.png"),
             "curves": plot_curves(state, out / "curves.png"), "strip": plot_strip(state, out / "strip.png")}
    return {k: v for k, v in plots.items() if v is not None}


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def model_table(state: BuildState) -> tuple[list[str], list[list[str]]]:
    """One row per exported model and precision: val figures, size, cost, latency and ratios to the references."""
    ev, bench, exp = state.stages["evaluate"], state.stages["bench"]["results"], state.stages["export"]
    refs = [k for k in bench if k.startswith(REFERENCE_MODELS) and k.endswith(
        ("fp32", "(untrained)"))]
    head = ["model", "precision", "val mIoU", "mAcc", "params", "GMACs", "p50 ms", "p90 ms", "p99 ms", "source"]
    head += [f"x {r}" for r in refs]
    rows = []
    for name in exp:
        if name == "engines":
            continue
        for precision, info in exp[name].items():
            key = f"{name} {precision}"
            b, e = bench.get(key, {}), ev.get(name, {}).get(precision, {})
            row = [name, precision, _fmt(100 * e["miou"], ".1f") + "%" if e else "-", _fmt(100 * e.get("macc", 0), ".1f")
                   + "%" if e else "-", f"{info['params']:,}" if info.get("params") else "-",
                   _fmt((info.get("macs") or 0) / 1e9, ".2f"), _fmt(b.get("median_ms")), _fmt(b.get("p90_ms")),
                   _fmt(b.get("p99_ms")), b.get("latency_source", "-")]
            row += [_fmt(b["median_ms"] / bench[r]["median_ms"], ".2f") if b.get("median_ms") else "-" for r in refs]
            rows.append(row)
    return head, rows


def class_table(state: BuildState) -> tuple[list[str], list[list[str]]]:
    ev = state.stages["evaluate"]
    names = ev["class_names"]
    models = [(n, p) for n in ev if n != "class_names" for p in ev[n]]
    head = ["class"] + [f"{n} {p}" for n, p in models]
    rows = []
    for i, c in enumerate(names):
        rows.append([c] + [_fmt(100 * v, ".1f") if (v := ev[n][p]["per_class_iou"][i]) is not None else "-"
                           for n, p in models])
    return head, rows


def _settings(state: BuildState) -> list[str]:
    import onnxruntime
    import torch
    from segfactory.factory._version import __version__

    o, st = state.options, state.stages
    lines = [f"data: `{o.search.data}`; target: `{o.search.target}`; {o.budget_text} ({st['search'].get('trained', '?')} "
             f"candidates trained, {_proxy(o, st['search'])}); training: "
             + (f"{o.train_minutes:g} min" if o.train_minutes else f"{o.epochs} epochs")
             + f" per model and recipe, recipes {', '.join(o.recipes)}; limit: {st['pick'] and _limit(state)}",
             (f"versions: segfactory {__version__}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
             f"Python {platform.python_version()}, {platform.machine()}")]
    note = reuse_note(state)
    return lines[:1] + [note] + lines[1:] if note else lines


def _proxy(o, search: dict) -> str:
    """How the search's candidates were scored: the preset, or candidates per rung."""
    rungs = search.get("rungs")
    if rungs:
        return "rungs " + ", ".join(f"{name} {count}" for name, count in rungs.items())
    return f"preset `{o.search.preset}`"


def _limit(state: BuildState) -> str:
    from segfactory.search.limits import LATENCY, Limits

    return Limits.of(state.options.search).describe(LATENCY)


def _deliverables(state: BuildState) -> list[str]:
    exp = state.stages["export"]["model"]
    return [f"`{info['file']}` and its card `{info['card']}` ({p.upper()})" for p, info in exp.items()]


def _latency_note(state: BuildState) -> str:
    bench = state.stages["bench"]["results"]
    sources = sorted({r.get("latency_source", "measured") for r in bench.values()})
    target = state.options.search.target
    if target_class(target).bench_backend:
        return ("Latency: **measured on this host** with ONNX Runtime, "
                f"{state.options.search.latency_threads or 1} thread(s), all models interleaved in shuffled rounds.")
    how = {"measured": "measured on the device (a local GPU, or the Jetson's agent)",
           "lut": "predicted from the device's lookup table", "estimated":
           "ESTIMATED from published specs (a roofline, not a measurement)"}
    return (f"**Latency on {target}: {'; '.join(how.get(s, s) for s in sources)}.** Each model's architecture is "
            "timed at the target's own precision, so the exported precisions share one figure here.")


def sections(state: BuildState) -> list[tuple[str, list[Any]]]:
    """The report as (title, blocks); a block is a paragraph (str), a table (head, rows) or a plot (Path)."""
    st = state.stages
    pick, check = st["pick"], st["check"]
    plots = _plots(state)
    summary = (f"Built model: trial {pick['trial']} of the search (`{pick['key']}`), deployed with agg size "
               f"{pick['config'][0]} and {pick['config'][1]} separable unit(s) per op; trained with the better of "
               f"its recipes (`{st['train']['model']['chosen']}`); exported model at {check['ratio']:.3f} x arch0 "
               f"beside it ({check['limit']}: {'met' if check['meets_limit'] else 'NOT met'}).")
    out: list[tuple[str, list[Any]]] = [
        ("Summary", [summary, _latency_note(state), "Deliverables: " + "; ".join(_deliverables(state)) + "."]),
        ("Settings", _settings(state)),
        ("Models", [model_table(state), plots.get("trained")]),
        ("Search", [("Proxy score against latency (ratio to arch0 measured beside it): every candidate, the pick, "
                    "the limit, and arch0 and the references as marked lines."), plots.get("front"),
                    _deploy_table(state)]),
        ("Training", [_training_table(state), plots.get("curves")]),
        ("Per-class IoU (val)", [class_table(state)]),
        ("Predictions on val", ["Image, ground truth, then each model's FP32 prediction.", plots.get("strip")]),
        ("Data licence", [_data_licence(state)]),
    ]
    return [(t, [b for b in blocks if b is not None]) for t, blocks in out]


def _deploy_table(state: BuildState):
    from segfactory.factory.io import read_json

    configs = read_json(state.out / "pick.json", "pick file")["deploy_configs"]
    head = ["agg size", "sep repeats", "latency ms", "x arch0", "source", "within the limit"]
    return head, [[str(c["agg_size"]), str(c["sep_repeats"]), _fmt(c["latency_ms"]), _fmt(c["ratio"], ".3f"),
                   c["source"], "yes" if c["fits"] else "no"] for c in configs]


def _training_table(state: BuildState):
    head = ["model", "recipe", "epochs", "minutes", "final val mIoU", "best epoch", "kept"]
    rows = []
    for name, by_recipe in state.stages["train"].items():
        for recipe, r in by_recipe.items():
            if recipe in ("chosen", "checkpoint"):
                continue
            rows.append([name, recipe, str(r["epochs"]), _fmt(r["elapsed_s"] / 60, ".1f"),
                         _fmt(100 * r["final"]["miou"], ".1f") + "%", str(r["best_epoch"]),
                         "yes" if by_recipe["chosen"] == recipe else ""])
    return head, rows


def _data_licence(state: BuildState) -> str:
    from segfactory.export.card import data_licence

    return f"Training and evaluation data `{state.options.search.data}`: {data_licence(state.options.search.data)}."


def stage_report(state: BuildState, progress: Any = None) -> dict[str, Any]:
    """The build's last stage: the report (``progress`` unused: it takes seconds)."""
    return write_report(state)


def write_report(state: BuildState) -> dict[str, Any]:
    from segfactory.factory.io import atomic_write_text

    secs = sections(state)
    atomic_write_text(state.out / "report.md", _markdown(secs, state))
    atomic_write_text(state.out / "report.html", _html(secs, state))
    return {"markdown": "report.md", "html": "report.html",
            "plots": sorted(p.name for _, blocks in secs for p in blocks if isinstance(p, Path))}


def _markdown(secs, state: BuildState) -> str:
    lines = [f"# segfactory build: {state.out.name}", ""]
    for title, blocks in secs:
        lines += [f"## {title}", ""]
        for b in blocks:
            if isinstance(b, str):
                lines += [b, ""]
            elif isinstance(b, Path):
                lines += [f"![{b.stem}]({b.name})", ""]
            else:
                head, rows = b
                lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    return "\n".join(lines)


def _html(secs, state: BuildState) -> str:
    parts = [("<!doctype html><html><head><meta charset='utf-8'><title>segfactory build</title><style>"
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}img{max-width:100%}</style></head><body>"),
             f"<h1>segfactory build: {html.escape(state.out.name)}</h1>"]
    for title, blocks in secs:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for b in blocks:
            if isinstance(b, str):
                parts.append(f"<p>{html.escape(b).replace('**', '')}</p>")
            elif isinstance(b, Path):
                data = base64.b64encode(b.read_bytes()).decode()
                parts.append(f"<img alt='{b.stem}' src='data:image/png;base64,{data}'>")
            else:
                head, rows = b
                parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
                parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
                parts.append("</table>")
    parts.append(f"<h2>build.json</h2><pre>{html.escape(json.dumps(state.to_dict(), indent=1)[:20000])}</pre>")
    return "\n".join(parts) + "</body></html>\n"
