"""The hard limits of a search, a pick and a build: one value, one rule, one way to say it.

``--max-latency-ms``, ``--max-latency-ratio`` (x arch0), ``--max-params`` and ``--max-macs`` are parsed once into
:class:`Limits`; the search rejects a proposal with :meth:`Limits.violations`, ``search pick`` and the build pick
among trials with :meth:`Limits.admits`, and reports and plots say what they are with :meth:`Limits.describe`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# field -> (the trial's key for its value, flag, how a violation and the limit read)
_RULES = {
    "max_latency_ms": ("latency_ms", "--max-latency-ms", "latency {v:.2f} ms", "latency <= {l:g} ms"),
    "max_latency_ratio": ("latency_ratio", "--max-latency-ratio", "latency ratio {v:.3f} x arch0",
                          "latency <= {l:g} x arch0"),
    "max_params": ("params", "--max-params", "params {v:,}", "params <= {l:,}"),
    "max_macs": ("macs", "--max-macs", "MACs {v:,}", "MACs <= {l:,}"),
}
COST = ("params", "macs")  # exact and free to compute: checked before anything is timed
LATENCY = ("latency_ms", "latency_ratio")


@dataclass(frozen=True)
class Limits:
    max_latency_ms: float | None = None
    max_latency_ratio: float | None = None
    max_params: int | None = None
    max_macs: int | None = None

    @classmethod
    def of(cls, options: Any) -> Limits:
        """The limits of SearchOptions (or of anything with these four attributes)."""
        return cls(**{name: getattr(options, name, None) for name in _RULES})

    def __bool__(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    @property
    def on_latency(self) -> bool:
        return self.max_latency_ms is not None or self.max_latency_ratio is not None

    def violations(self, values: dict[str, Any], keys: tuple[str, ...] = (*COST, *LATENCY)) -> list[str]:
        """One reason per limit over which a known value of ``values`` (a trial's keys) lies; unknown values and
        keys outside ``keys`` are not judged."""
        out = []
        for name, (key, flag, value_text, _) in _RULES.items():
            limit, value = getattr(self, name), values.get(key)
            if key in keys and limit is not None and value is not None and value > limit:
                out.append(f"{value_text.format(v=value)} > {flag} {limit:g}" if isinstance(limit, float)
                           else f"{value_text.format(v=value)} > {flag} {limit:,}")
        return out

    def admits(self, trial: dict[str, Any], keys: tuple[str, ...] = (*COST, *LATENCY)) -> bool:
        """Whether every limit on ``keys`` that is set is met; a trial lacking a limited value is not admitted."""
        return all(limit is None or key not in keys or (trial.get(key) is not None and trial[key] <= limit)
                   for name, (key, *_) in _RULES.items() for limit in (getattr(self, name),))

    def describe(self, keys: tuple[str, ...] = (*COST, *LATENCY)) -> str:
        parts = [rule[3].format(l=getattr(self, name)) for name, rule in _RULES.items()
                 if getattr(self, name) is not None and rule[0] in keys]
        return " and ".join(parts) or ("no latency limit" if keys == LATENCY else "no limits")
