"""What every latency target is: the :class:`Target` base (a cache by genotype, config, size and batch), its
:class:`LatencyResult`, the lookup-table mixin, and the helpers the targets share (``targets.py`` holds the
concrete targets and their registry)."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segfactory.factory.config import ModelConfig
from segfactory.factory.genotype import Genotype


@dataclass(frozen=True)
class LatencyResult:
    ms: float
    source: str  # measured | lut | estimated
    detail: dict = field(default_factory=dict)


def export_bytes(genotype: Genotype, config: ModelConfig, input_size: tuple[int, int], batch: int) -> bytes:
    from segfactory.benchmarks.models import ModelSpec, export_to

    with tempfile.TemporaryDirectory(prefix="segfactory-target-") as tmp:
        spec = ModelSpec(genotype.key(), genotype=genotype, config=config)
        return export_to(spec, Path(tmp), input_size, batch).read_bytes()


class Target:
    """Base: caches latencies by (genotype key, config key, input size, batch). A subclass is registered in
    :data:`TARGETS` under each name it serves; its class attributes say what it can do, for callers to read
    (:func:`target_class`) before or instead of building one, so that no code branches on a target's name."""

    name = "target"
    via_agent = False  # measured on a device agent (--device-url, profile --device-url, --verify-every)
    takes_lut = False  # predicted from a lookup table (--lut)
    profiled_here = False  # `segfactory profile` measures its table on this host
    engines = False  # deployed as TensorRT engines (the build makes them where TensorRT is installed)
    bench_backend: str | None = None  # times models on this host, beside a reference (None: through the target)

    @classmethod
    def create(cls, name: str, *, requested: str, lut, device_url, device_token_file, threads) -> Target:
        """The target ``name`` from the user's options (``requested``: the name as typed, an alias say, for
        messages); :func:`get_target` has refused the options the class attributes rule out."""
        raise NotImplementedError

    def __init__(self) -> None:
        self._cache: dict[tuple, LatencyResult] = {}

    def latency(self, genotype: Genotype, config: ModelConfig, input_size: tuple[int, int], batch: int = 1
                ) -> LatencyResult:
        key = (genotype.key(), config.key(), tuple(input_size), batch)
        if key not in self._cache:
            self._cache[key] = self._latency(genotype, config, tuple(input_size), batch)
        return self._cache[key]

    def _latency(self, genotype: Genotype, config: ModelConfig, input_size: tuple[int, int], batch: int
                 ) -> LatencyResult:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"target": self.name}


class LutMixin:
    lut: Any
    lut_fill: bool

    def _from_lut(self, genotype: Genotype, config: ModelConfig, input_size: tuple[int, int], batch: int
                  ) -> LatencyResult:
        from segfactory.benchmarks.lut.table import predict_latency

        self.lut.check(config, input_size, batch=batch)
        ms = predict_latency(genotype, config, self.lut, fill=self.lut_fill)
        return LatencyResult(ms, "lut", {**self.lut.describe(), "lut": str(self.lut.path)})


def warn(message: str) -> None:
    """A prominent warning on stderr (never on stdout, which --json owns)."""
    try:
        from rich.console import Console
        from rich.markup import escape

        # soft_wrap: one line whatever the width (rich wraps at 80 columns when stderr is not a terminal); the
        # message is escaped so that a "[...]" in it is printed, not read as markup
        Console(stderr=True, soft_wrap=True).print(f"[bold yellow]WARNING[/bold yellow]: {escape(message)}")
    except ImportError:
        print(f"WARNING: {message}", file=sys.stderr)
