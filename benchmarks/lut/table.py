"""The latency lookup table (FBNet/OFA style): unit signatures -> measured ms, plus a fitted whole-model predictor.

``lut.json`` (format ``segfactory.lut/2``) records where and how it was measured (device, backend and
version, threads, precision, input size, the ModelConfig parts that change the graph) and refuses to
predict for anything else. Prediction starts from the sum of the unit entries and corrects it with features
of the whole graph (predictor.py, graph.py), fitted on whole models measured on the same host or device;
the genotype keys of the fitting and selection sets are stored (``sets``, ``whole``), so that an evaluation
can prove its genotypes are disjoint from them. Missing units can be measured on demand (``fill=True``).

Tables in format ``segfactory.lut/1`` (unit entries and an ``overhead``: ``intercept_ms + scale * sum +
per_node_ms * nodes``) load and predict as before; saving one writes format /2, and ``segfactory profile
--out`` with the table's settings fits the new predictor while keeping every entry.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from segfactory.benchmarks.lut.units import enumerate_units, model_units
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError, RunError
from segfactory.factory.genotype import Genotype, sample_genotype
from segfactory.factory.io import atomic_write_json, read_json

FORMAT = "segfactory.lut/2"
FORMATS_READ = ("segfactory.lut/1", FORMAT)
CONFIG_FIELDS = ("num_classes", "agg_size", "sep_repeats", "encoder_padding")


def _finite(x: Any) -> bool:
    """A real number that is not NaN or infinite (JSON from other tools may hold NaN)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def config_part(config: ModelConfig) -> dict[str, Any]:
    return {k: getattr(config, k) for k in CONFIG_FIELDS}


class Lut:
    """A lookup table in memory; ``path`` (if any) is where :meth:`save` writes it atomically."""

    def __init__(self, data: dict[str, Any], path: str | Path | None = None) -> None:
        self.data = data
        self.path = Path(path) if path else None
        self._ref: tuple[int, float | None] | None = None
        self._units: dict[tuple, list[str]] = {}

    # ---- creation, I/O -----------------------------------------------------------------------------------------
    @classmethod
    def new(cls, config: ModelConfig, input_size: tuple[int, int], *, threads: int, provider: str = "cpu",
            path: str | Path | None = None) -> Lut:
        import onnxruntime as ort
        from segfactory.benchmarks.runners import cpu_description
        from segfactory.factory._version import __version__

        data = {
            "format": FORMAT,
            "device": cpu_description() if provider == "cpu" else f"onnxruntime {provider}",
            "backend": "ort" if provider == "cpu" else f"ort-{provider}",
            "backend_version": ort.__version__,
            "threads": threads,
            "precision": "fp32",
            "batch": 1,
            "input_size": list(input_size),
            "config": config_part(config),
            "segfactory_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "units_total": None,
            "overhead": None,
            "predictor": None,
            "sets": {},
            "whole": {},
            "anchor": None,
            "profile": {"sessions": []},
            "entries": {},
        }
        return cls(data, path)

    @classmethod
    def load(cls, path: str | Path) -> Lut:
        data = read_json(path, "lookup table")
        if not isinstance(data, dict) or data.get("format") not in FORMATS_READ:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise InputError(f"lookup table {path}: format is {got!r}, not {FORMAT!r} (or the older "
                             f"{FORMATS_READ[0]!r})")
        for field, kind in (("entries", dict), ("config", dict), ("input_size", list), ("threads", int),
                            ("backend", str)):
            if not isinstance(data.get(field), kind):
                raise InputError(f"lookup table {path}: field {field!r} is missing or not a {kind.__name__}")
        for sig, e in data["entries"].items():
            if not isinstance(e, dict) or not _finite(e.get("ms")) or e["ms"] < 0:
                raise InputError(f"lookup table {path}: entry {sig!r} has no valid 'ms' (a finite number >= 0, "
                                 f"got {e.get('ms') if isinstance(e, dict) else e!r})")
            if e.get("ref_ms") is not None and not (_finite(e["ref_ms"]) and e["ref_ms"] > 0):
                raise InputError(f"lookup table {path}: entry {sig!r} has an invalid 'ref_ms' {e['ref_ms']!r}")
        oh = data.get("overhead")
        if oh is not None and not (isinstance(oh, dict) and all(_finite(oh.get(k)) for k in ("intercept_ms", "scale"))
                                   and _finite(oh.get("per_node_ms", 0.0))):
            raise InputError(f"lookup table {path}: field 'overhead' needs finite numbers intercept_ms and scale")
        if data.get("predictor") is not None:
            from segfactory.benchmarks.lut.predictor import validate

            validate(data["predictor"], f"lookup table {path}")
        whole = data.get("whole") or {}
        if not isinstance(whole, dict) or not all(isinstance(w, dict) and _finite(w.get("ms")) and w["ms"] > 0
                                                   for w in whole.values()):
            raise InputError(f"lookup table {path}: field 'whole' needs a finite 'ms' > 0 for every measured model")
        return cls(data, path)

    def save(self, path: str | Path | None = None) -> Path:
        """Write the table atomically (a table read in format /1 is written in format /2: same entries)."""
        target = Path(path) if path else self.path
        if target is None:
            raise RunError("lookup table has no path to save to")
        self.data["format"] = FORMAT
        return atomic_write_json(target, self.data)

    # ---- facts ---------------------------------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.data["input_size"])  # type: ignore[return-value]

    @property
    def threads(self) -> int:
        return int(self.data["threads"])

    @property
    def entries(self) -> dict[str, dict[str, Any]]:
        return self.data["entries"]

    def describe(self) -> dict[str, Any]:
        return {k: self.data.get(k) for k in ("device", "backend", "backend_version", "threads", "precision",
                                              "input_size", "config")}

    def check(self, config: ModelConfig, input_size: tuple[int, int] | None = None, *,
              threads: int | None = None, backend: str | None = None, batch: int = 1) -> None:
        """Raise :class:`InputError` unless this table was measured for exactly this configuration."""
        where = f"lookup table {self.path or ''}".strip()
        want = config_part(config)
        for k, v in want.items():
            if self.data["config"].get(k) != v:
                raise InputError(f"{where} was measured for {k}={self.data['config'].get(k)!r}, not {v!r}")
        if input_size is not None and tuple(input_size) != self.input_size:
            raise InputError(f"{where} was measured at input {self.input_size[0]}x{self.input_size[1]}, "
                             f"not {input_size[0]}x{input_size[1]}")
        if threads is not None and threads != self.threads:
            raise InputError(f"{where} was measured with {self.threads} thread(s), not {threads}")
        if backend is not None and backend != self.data["backend"]:
            raise InputError(f"{where} was measured with backend {self.data['backend']}, not {backend}")
        if batch != self.data.get("batch", 1):
            raise InputError(f"{where} was measured at batch {self.data.get('batch', 1)}, not {batch}")

    def missing(self, sigs: Iterable[str]) -> list[str]:
        return sorted({s for s in sigs if s not in self.entries})

    @property
    def graph_level(self) -> str:
        """ONNX Runtime optimisation level whose graph features describe this table's runtime (graph.py)."""
        local_ort = self.data["backend"] == "ort" and self.data.get("measured_by") != "agent"
        return "all" if local_ort else "extended"

    def units(self, genotype: Genotype, config: ModelConfig) -> list[str]:
        key = (genotype.key(), config.key())
        if key not in self._units:
            self._units[key] = model_units(genotype, config, self.input_size)
        return self._units[key]

    def invalidate(self) -> None:
        """Forget cached derived numbers after entries were replaced (not only added)."""
        self._ref = None

    # ---- measuring -------------------------------------------------------------------------------------------------
    def fill(self, sigs: Iterable[str], config: ModelConfig, *, runs: int = 15,
             on_progress: Callable[[int], None] | None = None, save_every_s: float = 10.0) -> int:
        """Measure the signatures not yet in the table, saving (atomically) as bags finish; returns how many."""
        from segfactory.benchmarks.lut.measure import measure_units

        todo = self.missing(sigs)
        if not todo:
            return 0
        if self.data.get("measured_by") == "agent":  # lut_remote: its units are measured on the device
            raise RunError(f"lookup table {self.path or ''} was measured on {self.data.get('device')} through a "
                           f"device agent and lacks {len(todo)} unit(s) (e.g. {todo[0]}); fill it with "
                           "segfactory profile --device-url")
        provider = "cpu" if self.data["backend"] == "ort" else self.data["backend"].split("-", 1)[1]
        last_save = [time.monotonic()]

        def on_bag(entries: dict[str, dict[str, Any]], n: int) -> None:
            self.entries.update(entries)
            if self.path and time.monotonic() - last_save[0] >= save_every_s:
                self.save()
                last_save[0] = time.monotonic()
            if on_progress:
                on_progress(n)

        measure_units(todo, config, threads=self.threads, provider=provider, runs=runs, on_bag=on_bag)
        if self.path:
            self.save()
        return len(todo)

    # ---- prediction ------------------------------------------------------------------------------------------------
    def raw_ms(self, genotype: Genotype, config: ModelConfig, *, fill: bool = False) -> float:
        """Sum of the unit entries of ``genotype`` (no overhead); measures missing units if ``fill``."""
        units = self.units(genotype, config)
        missing = self.missing(units)
        if missing:
            if not fill:
                raise RunError(f"lookup table {self.path or ''} lacks {len(missing)} unit(s) of genotype "
                               f"{genotype.key()} (e.g. {missing[0]}); run segfactory profile or fill it")
            self.fill(missing, config)
        return sum(self.unit_ms(u) for u in units)

    def reference_ms(self) -> float | None:
        """Median over bags of the reference unit's time (the scale every bag is normalised to)."""
        from segfactory.benchmarks.stats import median

        n = len(self.entries)  # cached per table size: predicting asks this once per unit
        if self._ref is None or self._ref[0] != n:
            refs = [e["ref_ms"] for e in self.entries.values() if e.get("ref_ms")]
            self._ref = (n, median(refs) if refs else None)
        return self._ref[1]

    def unit_ms(self, sig: str) -> float:
        """A unit's time, rescaled by its bag's reference unit to the table's median reference."""
        e = self.entries[sig]
        ref = self.reference_ms()
        if ref and e.get("ref_ms"):
            return e["ms"] * ref / e["ref_ms"]
        return e["ms"]

    def nodes(self, genotype: Genotype, config: ModelConfig) -> int:
        """Nodes (after ONNX Runtime's fusions) of the genotype's units, as profiled."""
        return sum(int(self.entries[u].get("nodes", 0)) for u in self.units(genotype, config))

    def features(self, genotype: Genotype, config: ModelConfig, *, graph: bool = True, fill: bool = False
                 ) -> dict[str, float]:
        """The predictor's inputs: ``units_ms``, ``unit_nodes`` and (``graph``) the whole graph's features."""
        row = {"units_ms": self.raw_ms(genotype, config, fill=fill), "unit_nodes": float(self.nodes(genotype, config))}
        if graph:
            from segfactory.benchmarks.lut.graph import graph_features

            row.update(graph_features(genotype, config, self.input_size, self.graph_level))
        return row

    def overhead(self) -> tuple[float, float, float]:
        oh = self.data.get("overhead") or {}
        return (float(oh.get("intercept_ms", 0.0)), float(oh.get("scale", 1.0)),
                float(oh.get("per_node_ms", 0.0)))


def predict_latency(genotype: Genotype, config: ModelConfig, lut: Lut, *, fill: bool = False) -> float:
    """Predicted latency (ms) of ``build_model(genotype, config)`` at the table's input size, batch 1: the
    table's fitted predictor (predictor.py) or, in a table without one, ``intercept + scale * sum(unit ms) +
    per_node * nodes``."""
    lut.check(config)
    model = lut.data.get("predictor")
    if model:
        from segfactory.benchmarks.lut.predictor import GRAPH_FORMS, apply

        row = lut.features(genotype, config, graph=model["form"] in GRAPH_FORMS, fill=fill)
        return apply(model, [row])[0]
    a, b, c = lut.overhead()
    raw = lut.raw_ms(genotype, config, fill=fill)
    return a + b * raw + (c * lut.nodes(genotype, config) if c else 0.0)


def fit_overhead(lut: Lut, genotypes: Sequence[Genotype], measured_ms: Sequence[float], config: ModelConfig
                 ) -> dict[str, Any]:
    """Fit ``measured ~ intercept + scale * sum(units) [+ per_node * nodes]`` on whole models (least squares;
    the node term only with at least 4 models); store it with the fitting genotypes' keys."""
    import numpy as np

    if len(genotypes) != len(measured_ms) or len(genotypes) < 2:
        raise InputError("fitting the overhead needs at least two measured genotypes")
    raw = [lut.raw_ms(g, config) for g in genotypes]
    nodes = [lut.nodes(g, config) for g in genotypes]
    y = np.asarray(measured_ms, dtype=float)
    if len(genotypes) >= 4 and len(set(nodes)) > 1:
        X = np.column_stack([np.ones(len(raw)), raw, nodes])
    else:
        X = np.column_stack([np.ones(len(raw)), raw])
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    lut.data["overhead"] = {"intercept_ms": float(coef[0]), "scale": float(coef[1]),
                            "per_node_ms": float(coef[2]) if len(coef) > 2 else 0.0,
                            "fit_keys": [g.key() for g in genotypes], "fit_raw_ms": raw, "fit_nodes": nodes,
                            "fit_measured_ms": list(measured_ms)}
    return lut.data["overhead"]


def fit_keys(lut: Lut) -> set[str]:
    """Every genotype key the table's numbers were fitted or chosen on (overhead, predictor, fit/selection sets)."""
    keys = set((lut.data.get("overhead") or {}).get("fit_keys", []))
    keys |= set((lut.data.get("predictor") or {}).get("fitted_on", []))
    sets = lut.data.get("sets") or {}
    for name in ("fit", "selection"):
        if isinstance(sets.get(name), dict):
            keys |= set(sets[name].get("keys", []))
    keys |= {w.get("key", k) for k, w in (lut.data.get("whole") or {}).items() if w.get("set") in ("fit", "selection")}
    return keys


def assert_unseen(lut: Lut, named: Iterable[tuple[str, Genotype]], what: str = "evaluation") -> None:
    """Raise :class:`RunError` if any of ``named`` was used to fit or choose the table's predictor (by key)."""
    seen = fit_keys(lut)
    overlap = [f"{name} ({g.key()})" for name, g in named if g.key() in seen]
    if overlap:
        raise RunError(f"{what} genotypes {', '.join(overlap[:5])} were used to fit or choose the predictor of "
                       f"lookup table {lut.path or ''}: refusing to score them")


def units_by_frequency(config: ModelConfig, input_size: tuple[int, int], *, samples: int = 2000, seed: int = 0
                       ) -> list[str]:
    """Every reachable unit, the ones random genotypes use most often first (so a cut-short profile helps most)."""
    counts: dict[str, int] = {}
    rng = random.Random(seed)
    for _ in range(samples):
        for u in set(model_units(sample_genotype(rng), config, input_size)):
            counts[u] = counts.get(u, 0) + 1
    every = enumerate_units(config, input_size)
    return sorted(every, key=lambda s: (-counts.get(s, 0), s))
