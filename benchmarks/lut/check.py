"""``segfactory profile --check lut.json``: does a table (made last month, say) still predict this host or device?

The genotypes of a seed range that the table never fitted or chose its predictor on (checked by key) are
measured whole and predicted from the table; the result is the share within +-10%, the MAPE and Kendall's
tau. Here (a table of this host) they are measured with the protocol (protocol.py: groups interleaved beside
the anchor, rounds shuffled) at the table's threads and input size, and scored twice: on their medians as
measured now (``raw``) and, where the table knows the anchor's time, on ``ratio to the anchor x the table's
anchor time`` (``anchored``), which removes a change of the host's speed state between the two sittings. A
device table is checked on its agent (``--device-url``), one model after another.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from segfactory.benchmarks.lut.table import Lut, assert_unseen, predict_latency
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError, RunError

FORMAT = "segfactory.lut-check/1"
MAX_CHECK_SEEDS = 1000  # genotypes one check may time (each several seconds)


def table_config(lut: Lut) -> ModelConfig:
    """A ModelConfig with the graph-changing parts the table was measured for (weights do not change latency)."""
    part = lut.data["config"]
    try:
        padding = part["encoder_padding"]
        weights = "bundled" if padding == "tf_same" else "none"
        config = ModelConfig.create(part["num_classes"], part["agg_size"], part["sep_repeats"], weights)
    except (KeyError, TypeError) as e:
        raise InputError(f"lookup table {lut.path}: field 'config' lacks {e}") from None
    if config.encoder_padding != padding:
        raise InputError(f"lookup table {lut.path}: encoder_padding {padding!r} is not one segfactory builds")
    return config


def figures(measured: list[float], predicted: list[float], *, boot: int = 0, seed: int = 0) -> dict[str, Any]:
    """Share within +-10%, MAPE and Kendall's tau of ``predicted`` against ``measured``; with ``boot``, their
    90% bootstrap intervals (genotypes resampled with replacement) as ``*_90`` pairs."""
    import numpy as np
    from segfactory.benchmarks.lut.predictor import scores

    if not measured:
        return {"n": 0}
    out: dict[str, Any] = scores(measured, predicted)
    if boot and len(measured) >= 3:
        from scipy.stats import kendalltau

        m, p = np.asarray(measured, dtype=float), np.asarray(predicted, dtype=float)
        rng = np.random.default_rng(seed)
        draws: dict[str, list[float]] = {"within_10pct": [], "mape": [], "kendall_tau": []}
        for _ in range(boot):
            i = rng.integers(0, len(m), len(m))
            rel = np.abs(p[i] - m[i]) / m[i]
            draws["within_10pct"].append(float((rel <= 0.10).mean()))
            draws["mape"].append(float(rel.mean()))
            tau = kendalltau(m[i], p[i]).statistic
            if np.isfinite(tau):
                draws["kendall_tau"].append(float(tau))
        for k, xs in draws.items():
            if xs:
                out[f"{k}_90"] = [float(np.percentile(xs, 5)), float(np.percentile(xs, 95))]
    return out


def _check_here(lut: Lut) -> None:
    from segfactory.benchmarks.runners import cpu_description

    if lut.data["backend"] != "ort" or lut.data.get("device") != cpu_description():
        raise InputError(f"lookup table {lut.path} was measured on {lut.data.get('device')!r} "
                         f"({lut.data['backend']}), not on this host: check it where it was made")


def _measure_here(lut: Lut, named, config, *, rounds: int, min_seconds: float, log) -> dict[str, dict[str, Any]]:
    from segfactory.benchmarks.lut.protocol import measure_groups

    done: dict[str, dict[str, Any]] = {}
    measure_groups(named, config, lut.input_size, threads=lut.threads, done=done, rounds=rounds,
                   min_seconds=min_seconds, log=log)
    return done


def _measure_on_agent(lut: Lut, named, config, device_url: str, token_file, log) -> dict[str, dict[str, Any]]:
    from segfactory.benchmarks.lut.remote import RemoteFiller

    filler = RemoteFiller(lut, device_url, token_file)
    missing = lut.missing(u for _, g in named for u in lut.units(g, config))
    if missing:  # the agent is here: the table gains what these genotypes need (saved as it goes)
        log(f"measuring {len(missing)} unit(s) the table lacks on the agent")
        filler.fill(missing, config)
    done = {}
    for name, g in named:
        done[name] = {"key": g.key(), "ms": filler.measure_whole(g, config, lut.input_size), "at": time.time()}
        log(f"measured {len(done)}/{len(named)} genotypes whole on the agent")
    return done


def check_table(path: str | Path, *, seeds: tuple[int, int] | None = None, config: ModelConfig | None = None,
                rounds: int = 5, min_seconds: float = 2.0, device_url: str | None = None,
                token_file: str | Path | None = None, log=None) -> dict[str, Any]:
    """Measure and predict the genotypes of ``seeds`` (default: the table's evaluation range); the figures."""
    from segfactory.benchmarks.lut.protocol import EVAL_SEEDS, seed_set

    log = log or (lambda msg: print(msg, file=sys.stderr))
    lut = Lut.load(path)
    config = config or table_config(lut)
    lut.check(config)
    if seeds is None:
        seeds = tuple(((lut.data.get("sets") or {}).get("evaluation") or {}).get("seeds") or EVAL_SEEDS)
    remote = lut.data.get("measured_by") == "agent"
    if remote and device_url is None:  # refused before any genotype is drawn or timed
        raise InputError(f"lookup table {path} was measured on {lut.data.get('device')} through a device agent: "
                         "checking it needs --device-url (that device's agent)")
    if not remote:
        _check_here(lut)
    if seeds[1] - seeds[0] + 1 > MAX_CHECK_SEEDS:
        raise InputError(f"--eval-seeds {seeds[0]}-{seeds[1]}: {seeds[1] - seeds[0] + 1} genotypes, more than "
                         f"{MAX_CHECK_SEEDS} to time one by one; check a narrower range")
    named = seed_set(*seeds)
    assert_unseen(lut, named, "--eval-seeds")
    t0 = time.monotonic()
    if remote:
        done = _measure_on_agent(lut, named, config, device_url, token_file, log)
    else:
        done = _measure_here(lut, named, config, rounds=rounds, min_seconds=min_seconds, log=log)
    rows, predict_s = [], []
    for name, g in named:
        t = time.perf_counter()
        try:
            pred = predict_latency(g, config, lut, fill=not remote)
        except RunError as e:  # a device table without the units of this genotype and no agent to fill them
            raise RunError(f"{e} (while checking {name})") from None
        predict_s.append(time.perf_counter() - t)
        rows.append({"name": name, **done[name], "predicted_ms": pred})
    anchor_ms = (lut.data.get("anchor") or {}).get("ms")
    measured = [r["ms"] for r in rows]
    predicted = [r["predicted_ms"] for r in rows]
    out: dict[str, Any] = {
        "format": FORMAT, "lut": str(path), "device": lut.data.get("device"), "backend": lut.data["backend"],
        "threads": lut.threads, "input_size": list(lut.input_size), "seeds": list(seeds),
        "predictor": (lut.data.get("predictor") or {}).get("form") or "overhead (segfactory.lut/1)",
        "raw": figures(measured, predicted), "seconds": round(time.monotonic() - t0, 1),
        "predict_s_median": sorted(predict_s)[len(predict_s) // 2] if predict_s else None,
    }
    if anchor_ms and not remote:
        anchored = [r["ratio"] * anchor_ms for r in rows]
        for r, a in zip(rows, anchored):
            r["anchored_ms"] = a
        out["anchored"] = figures(anchored, predicted)
        out["anchor_ms_table"] = anchor_ms
    out["rows"] = rows
    return out


def render_check(result: dict[str, Any]) -> str:
    """The figures in one or two lines."""
    h, w = result["input_size"]
    head = (f"{result['lut']} ({result['backend']}, {result['threads']} thread(s), {h}x{w}, predictor "
            f"{result['predictor']}): seeds {result['seeds'][0]}-{result['seeds'][1]}")
    lines = [head]
    for label in ("anchored", "raw"):
        f = result.get(label)
        if f and f.get("n"):
            tau = f.get("kendall_tau")
            lines.append(f"  {label:8} {f['n']} genotypes: {100 * f['within_10pct']:.0f}% within +-10%, "
                         f"MAPE {100 * f['mape']:.1f}%, Kendall tau {'n/a' if tau is None else f'{tau:.3f}'}")
    return "\n".join(lines)
