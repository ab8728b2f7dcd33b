"""Search reports: ``pareto.png`` (score against latency, the Pareto front highlighted) and ``summary.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segfactory.factory.io import atomic_write, atomic_write_text
from segfactory.search.context import run_strategy


def pareto_front(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scored trials no other beats on both score (higher) and latency (lower), by increasing latency."""
    pts = [t for t in trials if t.get("status") in ("ok", "early-stopped") and t.get("score") is not None
           and t.get("latency_ms") is not None]
    pts.sort(key=lambda t: (t["latency_ms"], -t["score"]))
    front, best = [], -1.0
    for t in pts:
        if t["score"] > best:
            front.append(t)
            best = t["score"]
    return front


def plot_pareto(trials: list[dict[str, Any]], path: Path, title: str = "",
                reference_ms: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for status, marker, color in (("ok", "o", "tab:blue"), ("early-stopped", "x", "tab:gray")):
        pts = [t for t in trials if t.get("status") == status and t.get("score") is not None
               and t.get("latency_ms") is not None]
        if pts:
            ax.scatter([t["latency_ms"] for t in pts], [t["score"] for t in pts], marker=marker, c=color,
                       label=f"{status} ({len(pts)})", alpha=0.8)
    front = pareto_front(trials)
    if front:
        ax.plot([t["latency_ms"] for t in front], [t["score"] for t in front], "-o", c="tab:red", lw=1.5,
                mfc="none", ms=9, label="Pareto front")
        for t in front:
            ax.annotate(str(t["index"]), (t["latency_ms"], t["score"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    if reference_ms is not None:
        ax.axvline(reference_ms, ls="--", c="tab:gray", lw=1, label=f"arch0 ({reference_ms:.1f} ms)")
    ax.set_xlabel("latency of the deployed model (ms)")
    ax.set_ylabel("proxy score (geometric mean of mIoU, mAcc, fwIoU)")
    ax.set_title(title or "search candidates", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return path


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| index | key | reward | score | mIoU | latency ms | source | params | GMACs | status |",
             "|---:|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for t in rows:
        lines.append(
            f"| {t['index']} | `{t['key']}` | {_fmt(t.get('reward'), '.4f')} | {_fmt(t.get('score'), '.4f')} | "
            f"{_fmt(t.get('miou'), '.4f')} | {_fmt(t.get('latency_ms'), '.2f')} | {t.get('latency_source') or '-'} | "
            f"{_fmt(t.get('params'), ',')} | {_fmt(t['macs'] / 1e9 if t.get('macs') else None, '.3f')} | "
            f"{t.get('status')}{' @' + t['rung_preset'] if t.get('rung_preset') else ''} |")
    return lines


TIME_LABELS = {"check_s": "cost and feasibility checks", "latency_s": "latency (measured or predicted)",
               "stage1_s": "proxy stage 1", "stage2_s": "proxy stage 2", "val_s": "proxy validation",
               "trial_other_s": "trials' bookkeeping, partial work of failed trials",
               "strategy_s": "strategy (proposing, learning)", "state_s": "saving the search state",
               "prepare_s": "stage-1 cache", "reference_s": "timing arch0", "unaccounted_s": "start-up and reports"}


def time_lines(times: dict[str, Any]) -> list[str]:
    """The "where the time went" table of a search (see :func:`segfactory.search.results.time_breakdown`)."""
    total = times.get("elapsed_s") or sum(v for k, v in times.items() if k in TIME_LABELS) or 1.0
    lines = ["| part | seconds | share |", "|---|---:|---:|"]
    lines += [f"| {label} | {times[k]:.0f} | {100 * times[k] / total:.0f}% |" for k, label in TIME_LABELS.items()
              if times.get(k)]
    lines.append(f"| **wall time** | {total:.0f} | |")
    if times.get("rejected_mean_s") is not None:
        lines.append(f"\nA rejected proposal cost {times['rejected_mean_s']:.2f} s on average.")
    return lines


def _latency_term(rw: dict[str, Any]) -> str:
    target = f"{_fmt(rw.get('latency_target_ms'), '.2f')} ms"
    if rw.get("latency_form") == "absolute":
        return f"+ {rw.get('latency_weight')} x |latency / {target} - 1|"
    return f"x (latency / {target})^{rw.get('latency_weight')}"


def _rung_lines(trials: list[dict[str, Any]], run: dict[str, Any]) -> list[str]:
    """With rungs: candidates per rung and what the best of the highest rung scored at each rung it reached."""
    rungs = run.get("rungs") or []
    if not rungs:
        return []
    from segfactory.search.rungs import rung_counts

    counts = rung_counts(trials, [r["preset"] for r in rungs])
    return [f"- rungs (top {run.get('options', {}).get('promote')} promoted): "
            + ", ".join(f"{name} {n}" for name, n in counts.items())
            + "; the top table ranks the highest rung first (status `@preset`): rewards of two rungs do not compare"]


def summary_markdown(trials: list[dict[str, Any]], run: dict[str, Any], top: int = 10,
                     times: dict[str, Any] | None = None) -> str:
    o = run.get("options", {})
    counts = {s: sum(1 for t in trials if t.get("status") == s) for s in ("ok", "early-stopped", "rejected", "failed")}
    ranked = sorted([t for t in trials if t.get("reward") is not None],  # highest rung first (search.rungs)
                    key=lambda t: (-int(t.get("rung") or 0), -t["reward"], t["index"]))
    wall = [t["wall_s"] for t in trials if t.get("status") != "rejected" and t.get("wall_s")]
    ref = run.get("reference", {})
    rw = run.get("reward", {})
    lines = [
        "# Search summary", "",
        (f"- data `{o.get('data')}`, strategy `{run_strategy(run)}`, preset `{run.get('preset')}`, seed {o.get('seed')}, "
         f"device {run.get('device')}"),
        (f"- deployed model: agg {run['deploy_config']['agg_size']}, sep_repeats {run['deploy_config']['sep_repeats']}"
         f" at {run['input_size'][0]}x{run['input_size'][1]}; proxies: agg {run['proxy_config']['agg_size']}, "
         f"sep_repeats {run['proxy_config']['sep_repeats']}"),
        (f"- target `{run.get('target', {}).get('target')}`; arch0 there: {_fmt(ref.get('latency_ms'), '.2f')} ms "
         f"({ref.get('latency_source', '-')}), {_fmt(ref.get('params'), ',')} params"),
        (f"- reward = score {_latency_term(rw)} x "
         f"(params / {_fmt(rw.get('params_target'), ',.0f')})^{rw.get('params_weight')}"),
        (f"- candidates: {len(trials)} ({', '.join(f'{k} {v}' for k, v in counts.items())}); "
         f"mean {_fmt(sum(wall) / len(wall) if wall else None, '.1f')} s per trained candidate"),
        *_rung_lines(trials, run),
        "",
        f"## Top {min(top, len(ranked))} by reward", "",
        *_table(ranked[:top]),
        "",
        "## Pareto front (score against latency)", "",
        *_table(pareto_front(trials)),
        "",
    ]
    if times:
        lines += ["## Where the time went", "", *time_lines(times), ""]
    failed = [t for t in trials if t.get("status") in ("failed", "rejected")]
    if failed:
        lines += ["## Rejected and failed", "", "| index | status | reason |", "|---:|---|---|"]
        lines += [f"| {t['index']} | {t['status']} | {t.get('reason', '')} |" for t in failed[:50]]
        lines.append("")
    return "\n".join(lines)


def write_reports(out: Path, trials: list[dict[str, Any]], run: dict[str, Any],
                  times: dict[str, Any] | None = None) -> None:
    out = Path(out)
    plot_pareto(trials, out / "pareto.png",
                title=f"{run_strategy(run)} search, {len(trials)} candidates",
                reference_ms=run.get("reference", {}).get("latency_ms"))
    atomic_write_text(out / "summary.md", summary_markdown(trials, run, times=times))
