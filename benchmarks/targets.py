"""Named latency targets and how each gets a latency (design.md "Targets and latency sources").

    cpu               this host, ONNX Runtime CPU, measured (1 thread by default: 2-thread timings here flip
                      between two speed states), or from a --lut measured here (missing units filled here)
    cuda              a local CUDA GPU, measured (TensorRT if installed, else ONNX Runtime's CUDA EP, else torch)
    jetson-orin-nano  Orin Nano 8GB (MAXN_SUPER)  } --device-url alone: every candidate measured whole on the
    jetson-orin-nx    Orin NX 16GB (MAXN)         } device agent; --lut alone: predicted from a table measured on
    jetson-agx-orin   AGX Orin 64GB (MAXN)        } the device (a candidate with units the table lacks is
    jetson-orin       alias of jetson-orin-nano   } ESTIMATED, warned); both: predicted, the missing units
                      measured on the agent and added to the table (--verify-every N: every Nth candidate also
                      measured whole, the prediction's error logged); neither: ESTIMATED from published specs
                      (roofline.py), with a prominent warning

Every :class:`LatencyResult` says its source: "measured", "lut" or "estimated".
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from segfactory.benchmarks.target_base import LatencyResult, LutMixin, Target, export_bytes, warn
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError, RunError
from segfactory.factory.genotype import Genotype
from segfactory.factory.registry import Registry

ALIASES = {"jetson-orin": "jetson-orin-nano"}
DEFAULT_TARGET = "cpu"  # this host: needs no device, table or agent
INTERLEAVED_ROUNDS = 10  # shuffled rounds of a candidate interleaved with the reference


class CpuTarget(LutMixin, Target):
    """This host through ONNX Runtime: measured (beside a reference, see :meth:`set_reference`) or a lut made here."""

    name = "cpu"
    takes_lut = True
    profiled_here = True
    bench_backend = "ort"

    @classmethod
    def create(cls, name, *, requested, lut, device_url, device_token_file, threads):
        return cls(lut=lut, threads=threads)

    def __init__(self, *, lut: str | Path | None = None, threads: int | None = None,
                 min_seconds: float = 1.0, warmup_ms: float = 200) -> None:
        super().__init__()
        self.reference: tuple | None = None
        self.threads = threads or 1
        self.min_seconds, self.warmup_ms = min_seconds, warmup_ms
        self.lut = None
        self.lut_fill = False
        if lut is not None:
            from segfactory.benchmarks.lut.table import Lut
            from segfactory.benchmarks.runners import cpu_description

            self.lut = Lut.load(lut)
            if threads is not None and threads != self.lut.threads:
                raise InputError(f"lookup table {lut} was measured with {self.lut.threads} thread(s), "
                                 f"not --threads {threads}")
            if self.lut.data.get("target", "cpu") != "cpu":
                raise InputError(f"lookup table {lut} was profiled for target {self.lut.data['target']}, not cpu")
            if self.lut.data["backend"] != "ort":
                raise InputError(f"lookup table {lut} is for backend {self.lut.data['backend']}, not ort (cpu)")
            self.threads = self.lut.threads
            self.lut_fill = self.lut.data.get("device") == cpu_description()  # fill only where it was made

    def set_reference(self, genotype: Genotype, config: ModelConfig, input_size: tuple[int, int],
                      reference_ms: float) -> None:
        """Measure later candidates interleaved with this reference model, in the same rounds.

        This host flips between two speed states (measuring-here.md), so a latency measured minutes after the
        reference's carries the host's state. With a reference, a candidate's latency is its median ratio to the
        reference over shuffled rounds, times ``reference_ms`` (the reference's latency measured at the start),
        and the detail records the candidate's raw median, the reference's median beside it and the ratio.
        """
        self.reference = (genotype, config, tuple(input_size), float(reference_ms))
        self._reference_onnx = None
        self._cache.clear()  # latencies measured alone (the reference's own) are not comparable ratios

    def _latency(self, genotype, config, input_size, batch):
        if self.lut is not None:
            return self._from_lut(genotype, config, input_size, batch)
        ref = self.reference
        if ref is not None and batch == 1 and ref[2] == tuple(input_size):
            return self._interleaved(genotype, config, input_size)
        from segfactory.benchmarks.harness import measure
        from segfactory.benchmarks.runners import OrtRunner

        with OrtRunner(export_bytes(genotype, config, input_size, batch), input_shape=(batch, 3, *input_size),
                       threads=self.threads, name=genotype.key()) as runner:
            res = measure(runner, warmup_ms=self.warmup_ms, min_seconds=self.min_seconds)
        return LatencyResult(res["median_ms"], "measured", res)

    def _interleaved(self, genotype, config, input_size) -> LatencyResult:
        from segfactory.benchmarks.harness import measure_interleaved
        from segfactory.benchmarks.runners import OrtRunner

        ref_genotype, ref_config, _, ref_ms = self.reference  # the reference in its own configuration
        if self._reference_onnx is None:
            self._reference_onnx = export_bytes(ref_genotype, ref_config, input_size, 1)
        shape = (1, 3, *input_size)
        with OrtRunner(self._reference_onnx, input_shape=shape, threads=self.threads, name="reference") as r, \
                OrtRunner(export_bytes(genotype, config, input_size, 1), input_shape=shape, threads=self.threads,
                          name=genotype.key()) as c:
            ref_res, res = measure_interleaved([r, c], warmup_ms=self.warmup_ms, min_seconds=self.min_seconds,
                                               rounds=INTERLEAVED_ROUNDS)
        ratio = float(res["ratio_to_first"])
        res.update(raw_median_ms=res["median_ms"], reference_median_ms=ref_res["median_ms"], ratio=ratio,
                   reference_ms=ref_ms, interleaved_with="reference")
        return LatencyResult(ratio * ref_ms, "measured", res)

    def describe(self):
        return {"target": self.name, "threads": self.threads, "lut": str(self.lut.path) if self.lut else None}


class CudaTarget(Target):
    """A local CUDA GPU, measured: TensorRT (FP16) if importable, else ORT's CUDA EP, else torch eager."""

    name = "cuda"

    @classmethod
    def create(cls, name, *, requested, lut, device_url, device_token_file, threads):
        return cls()  # the thread count is the CPU's, not this GPU's: it does not apply

    def __init__(self, *, precision: str = "fp16", min_seconds: float = 1.0) -> None:
        super().__init__()
        try:
            import torch
        except ImportError:
            raise RunError("target cuda needs torch with CUDA") from None
        if not torch.cuda.is_available():
            raise RunError("target cuda: no CUDA device is available on this host")
        self.precision, self.min_seconds = precision, min_seconds
        try:
            import tensorrt  # noqa: F401

            self.backend = "trt"
        except ImportError:
            import onnxruntime as ort

            self.backend = "ort-cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "torch"

    def _latency(self, genotype, config, input_size, batch):
        from segfactory.benchmarks.harness import measure
        from segfactory.benchmarks.models import ModelSpec, make_runner

        with tempfile.TemporaryDirectory(prefix="segfactory-cuda-") as tmp, \
                make_runner(ModelSpec(genotype.key(), genotype=genotype, config=config), self.backend,
                            input_size=input_size, batch=batch, workdir=Path(tmp), device="cuda",
                            precision=self.precision if self.backend == "trt" else "fp32") as runner:
            res = measure(runner, min_seconds=self.min_seconds)
        return LatencyResult(res["median_ms"], "measured", res)


class JetsonTarget(LutMixin, Target):
    """A Jetson Orin module; the sources by the options given (module docstring): --device-url alone measures,
    --lut predicts (roofline estimate for a candidate the table cannot cover), both fill the table lazily."""

    via_agent = True
    takes_lut = True
    engines = True

    @classmethod
    def create(cls, name, *, requested, lut, device_url, device_token_file, threads):
        if threads is not None:
            raise InputError(f"target {requested} takes no thread count (it is a GPU target)")
        return cls(name, lut=lut, device_url=device_url, device_token_file=device_token_file)

    def __init__(self, name: str, *, lut: str | Path | None = None, device_url: str | None = None,
                 device_token_file: str | None = None, precision: str = "fp16") -> None:
        super().__init__()
        self.name = name
        self.device_url, self.token_file, self.precision = device_url, device_token_file, precision
        self.lut = None
        self.lut_fill = False  # a Jetson's table is never filled from this host's measurements
        self.filler = None
        self.verify_every: int | None = None
        self._predicted = 0
        self._warned = False
        if device_url is not None:
            try:
                from segfactory.benchmarks.agent.client import measure_remote
            except ImportError:
                raise RunError("device agent client not available") from None
            self._measure_remote = measure_remote
        if lut is not None:
            from segfactory.benchmarks.lut.table import Lut

            self.lut = Lut.load(lut)
            if self.lut.data.get("target", "cpu") != name:  # tables made by profile --device-url name their target
                raise InputError(f"lookup table {lut} was profiled for target {self.lut.data.get('target', 'cpu')}, "
                                 f"not {name}")
            self.precision = self.lut.data.get("precision") or precision
            if device_url is not None:
                from segfactory.benchmarks.lut.remote import RemoteFiller

                self.filler = RemoteFiller(self.lut, device_url, device_token_file)

    def _latency(self, genotype, config, input_size, batch):
        if self.lut is not None:
            return self._from_table(genotype, config, input_size, batch)
        if self.device_url is not None:
            return self._measure_whole(genotype, config, input_size, batch)
        return self._estimate(genotype, config, input_size, batch)

    def _measure_whole(self, genotype, config, input_size, batch):
        settings = {"input_size": list(input_size), "batch": batch, "precision": self.precision,
                    "target": self.name}
        res = self._measure_remote(self.device_url, self.token_file,
                                   export_bytes(genotype, config, input_size, batch), settings)
        if not isinstance(res, dict) or "median_ms" not in res:
            raise RunError(f"device agent {self.device_url} answered without median_ms")
        return LatencyResult(float(res["median_ms"]), "measured", res)

    def _from_table(self, genotype, config, input_size, batch):
        self.lut.check(config, input_size, batch=batch)
        missing = self.lut.missing(self.lut.units(genotype, config))
        reason = None
        if missing and self.filler is None:
            reason = f"lookup table {self.lut.path} lacks {len(missing)} unit(s) (e.g. {missing[0]})"
        elif missing:
            try:
                self.filler.check_device()  # another device: InputError, which stops the search
                self.filler.fill(missing, config)
            except InputError:
                raise
            except Exception as e:  # noqa: BLE001 - unreachable agent, a unit that fails to build: fall back
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                reason = f"measuring {len(missing)} missing unit(s) on {self.device_url} failed: {first}"
        if reason:
            warn(f"{self.name}: {reason}; latency of genotype {genotype.key()} ESTIMATED (roofline) instead")
            est = self._estimate(genotype, config, input_size, batch, quiet=True)
            return LatencyResult(est.ms, "estimated", {**est.detail, "fallback": reason, "lut": str(self.lut.path)})
        res = self._from_lut(genotype, config, input_size, batch)
        self._predicted += 1
        if self.verify_every and self.filler is not None and self._predicted % self.verify_every == 0:
            res = LatencyResult(res.ms, res.source, {**res.detail, "verify": self._verify(genotype, config,
                                                                                         input_size, res.ms)})
        return res

    def _verify(self, genotype, config, input_size, predicted_ms: float) -> dict[str, Any]:
        """Measure the candidate whole on the agent; log the prediction's error (stderr and <lut>.verify.jsonl)."""
        import json
        import time

        record: dict[str, Any] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "key": genotype.key(),
                                  "predicted_ms": predicted_ms}
        try:
            measured = self.filler.measure_whole(genotype, config, input_size)
            record.update(measured_ms=measured, error=(predicted_ms - measured) / measured)
            print(f"{self.name}: verify {genotype.key()}: predicted {predicted_ms:.3f} ms, measured "
                  f"{measured:.3f} ms ({100 * record['error']:+.1f}%)", file=sys.stderr)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - a failed check is logged, the prediction stands
            record["failed"] = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            print(f"{self.name}: verify {genotype.key()} failed: {record['failed']}", file=sys.stderr)
        if self.lut.path:
            with open(f"{self.lut.path}.verify.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        return record

    def _estimate(self, genotype, config, input_size, batch, quiet: bool = False):
        import torch
        from segfactory.benchmarks.roofline import SPECS, WARNING, estimate_model_ms
        from segfactory.factory.model import build_model

        if not self._warned and not quiet:
            warn(f"{self.name}: {WARNING}")
            self._warned = True
        with torch.device("meta"):  # a genotype or a reference model (LR-ASPP): shapes only
            model = build_model(genotype, config, load_weights=False)
        ms = estimate_model_ms(model, (batch, 3, *input_size), self.name, self.precision)
        spec = SPECS[self.name]
        return LatencyResult(ms, "estimated", {"backend": "roofline", "device": f"{spec.name}, {spec.mode}",
                                               "precision": self.precision, "threads": None,
                                               "warning": WARNING})

    def describe(self):
        source = ("lut+agent" if self.filler else "lut" if self.lut else "agent" if self.device_url
                  else "roofline estimate")
        return {"target": self.name, "source": source, "precision": self.precision,
                "verify_every": self.verify_every}


# name -> the Target class that serves it (a class may serve several names: the Jetson modules).
TARGETS: Registry[type[Target]] = Registry("target")
TARGETS.register("cpu", CpuTarget, help="this host, ONNX Runtime CPU (measured; 1 thread by default) or --lut")
TARGETS.register("cuda", CudaTarget, help="a local CUDA GPU (TensorRT, else ONNX Runtime CUDA, else torch), measured")
TARGETS.register("jetson-orin-nano", JetsonTarget, help="Jetson Orin Nano 8GB, MAXN_SUPER: agent URL, --lut, or estimated")
TARGETS.register("jetson-orin-nx", JetsonTarget, help="Jetson Orin NX 16GB, MAXN: agent URL, --lut, or estimated")
TARGETS.register("jetson-agx-orin", JetsonTarget, help="Jetson AGX Orin 64GB, MAXN: agent URL, --lut, or estimated")


def target_help() -> dict[str, str]:
    """Every name a user may type (aliases last) -> one line of help; read now, so later registrations count."""
    return {**{n: TARGETS.help(n) for n in TARGETS}, **{a: f"alias of {t}" for a, t in ALIASES.items()}}


def target_names() -> list[str]:
    return list(target_help())


def canonical_target(name: str) -> str:
    """The registered name ``name`` stands for (an alias resolved); InputError listing the names if none."""
    canonical = ALIASES.get(name, name)
    if canonical not in TARGETS:
        raise InputError(f"unknown target {name!r}; valid targets: {', '.join(target_names())}")
    return canonical


def target_class(name: str) -> type[Target]:
    """The class serving target ``name`` (an alias too): its attributes say what the target can do."""
    return TARGETS.get(canonical_target(name))


def targets_with(attribute: str) -> str:
    """The targets whose class has ``attribute`` set, for messages ("--lut is for cpu, jetson-orin-nano, ...")."""
    return ", ".join(n for n in TARGETS if getattr(TARGETS.get(n), attribute))


def get_target(name: str, *, lut: str | Path | None = None, device_url: str | None = None,
               device_token_file: str | None = None, threads: int | None = None,
               verify_every: int | None = None) -> Target:
    """The target called ``name`` (see the module docstring); unknown names raise :class:`InputError`.

    ``verify_every`` N (a target measured on a device agent, with both ``lut`` and ``device_url``): every Nth
    predicted candidate is also measured whole on the device and the prediction's error logged."""
    canonical = canonical_target(name)
    cls = TARGETS.get(canonical)
    if threads is not None and threads < 1:
        raise InputError(f"threads={threads} must be at least 1")
    if device_url is not None and not cls.via_agent:
        raise InputError(f"target {name} is measured on this host; --device-url is for {targets_with('via_agent')}")
    if lut is not None and not cls.takes_lut:
        raise InputError(f"target {name} is measured directly; --lut is for {targets_with('takes_lut')}")
    if verify_every is not None and (lut is None or device_url is None):  # both: a target that takes them
        raise InputError(f"--verify-every needs a target measured on a device agent ({targets_with('via_agent')}) "
                         f"with both --lut and --device-url (got target "
                         f"{name}{', --lut' if lut else ''}{', --device-url' if device_url else ''})")
    if verify_every is not None and verify_every < 1:
        raise InputError(f"--verify-every {verify_every} must be at least 1")
    target = cls.create(canonical, requested=name, lut=lut, device_url=device_url,
                        device_token_file=device_token_file, threads=threads)
    if verify_every is not None:
        target.verify_every = verify_every
    return target
