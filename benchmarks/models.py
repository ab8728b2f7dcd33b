"""What ``bench`` and the targets time: segfactory models (by arch name, genotype file or checkpoint), ONNX files,
TensorRT engines and torchvision's reference segmentation models, turned into runners."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError
from segfactory.factory.genotype import Genotype
from segfactory.factory.registry import Registry


@dataclass
class ModelSpec:
    """One model to time: exactly one of ``path`` (ONNX/engine), ``genotype`` (+config: a genotype or a reference
    model, see factory.reference) or ``reference`` (a reference model's name)."""

    name: str
    path: Path | None = None
    genotype: Any = None  # Genotype | Reference
    config: ModelConfig | None = None
    reference: str | None = None
    module: Any = None  # a loaded torch module (checkpoints)

    def __post_init__(self) -> None:
        if self.reference is not None and self.genotype is None:
            from segfactory.factory.reference import Reference

            self.genotype = Reference(self.reference)


def reference_names() -> list[str]:
    """torchvision's reference segmentation models (factory.reference.REFERENCES)."""
    from segfactory.factory.reference import REFERENCES

    return REFERENCES.names()


def torch_module(spec: ModelSpec):
    if spec.module is not None:
        return spec.module
    if spec.genotype is not None:
        from segfactory.factory.config import ModelConfig
        from segfactory.factory.model import build_model, config_for

        config = config_for(spec.genotype, spec.config or ModelConfig.create())
        return build_model(spec.genotype, config, load_weights=False).eval()
    raise InputError(f"{spec.name}: an ONNX file or engine cannot run on the torch backend")


def export_to(spec: ModelSpec, directory: Path, input_size: tuple[int, int], batch: int = 1) -> Path:
    """An ONNX file of ``spec`` in ``directory`` (the file itself when it already is one)."""
    if spec.path is not None:
        return spec.path
    module = torch_module(spec)
    path = directory / f"{_safe(spec.name)}.onnx"
    from segfactory.export.onnx import export_onnx

    return export_onnx(module, path, input_size=input_size, dynamic_batch=batch != 1)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "model"


# Runner backends: name -> factory(spec, *, shape, threads, workdir, device, precision) -> Runner. trtexec is not
# here: it times a whole run in a subprocess (benchmarks.trtexec.run_trtexec), not one inference at a time, so
# it is a backend of `bench` (bench_backends) without being a runner.
RunnerFactory = Callable[..., Any]
RUNNERS: Registry[RunnerFactory] = Registry("runner backend")
TRTEXEC = "trtexec"
DEFAULT_BACKEND = "ort"  # ONNX Runtime CPU: runs wherever segfactory installs
TRTEXEC_HELP = "the trtexec binary (whole runs, in a subprocess)"


def bench_backends() -> list[str]:
    """What ``bench --backend`` takes: every runner registered (now), then trtexec."""
    return [*RUNNERS.names(), TRTEXEC]


def bench_backend_help(name: str) -> str:
    return TRTEXEC_HELP if name == TRTEXEC else RUNNERS.help(name)


def _ort(provider: str) -> RunnerFactory:
    def make(spec: ModelSpec, *, shape, threads, workdir, device, precision):
        from segfactory.benchmarks.runners import OrtRunner

        if spec.path is not None and spec.path.suffix.lower() != ".onnx":
            raise InputError(f"{spec.path}: backend ort needs an .onnx file")
        path = export_to(spec, workdir, shape[2:], shape[0])
        return OrtRunner(path, input_shape=shape, threads=threads, provider=provider, name=spec.name,
                         fp16=precision == "fp16")

    return make


RUNNERS.register("ort", _ort("cpu"), help="ONNX Runtime, CPU execution provider")
RUNNERS.register("ort-cuda", _ort("cuda"), help="ONNX Runtime, CUDA execution provider")
RUNNERS.register("ort-tensorrt", _ort("tensorrt"), help="ONNX Runtime, TensorRT execution provider")


@RUNNERS.register("torch", help="PyTorch eager on --device (a segfactory model, checkpoint or reference)")
def _torch(spec: ModelSpec, *, shape, threads, workdir, device, precision):
    from segfactory.benchmarks.runners import TorchRunner

    return TorchRunner(torch_module(spec), shape, device=device, threads=threads, name=spec.name)


@RUNNERS.register("trt", help="TensorRT Python API: an engine file, or one built from the ONNX")
def _trt(spec: ModelSpec, *, shape, threads, workdir, device, precision):
    from segfactory.benchmarks.trt_runner import TensorRTRunner

    path = export_to(spec, workdir, shape[2:], shape[0])
    return TensorRTRunner(path, input_shape=shape, precision=precision, name=spec.name)


def make_runner(spec: ModelSpec, backend: str, *, input_size: tuple[int, int], batch: int = 1,
                threads: int | None = None, workdir: Path, device: str = "cpu", precision: str = "fp32"):
    """A runner of ``spec`` on ``backend`` (a name in :data:`RUNNERS`); trtexec is run by :func:`run_trtexec`.

    The runner is a context manager: ``with make_runner(...) as runner:`` closes it.
    """
    if backend not in RUNNERS:
        note = f" ({TRTEXEC} times whole runs: benchmarks.trtexec.run_trtexec)" if backend == TRTEXEC else ""
        raise InputError(f"backend {backend!r} is not one of {', '.join(RUNNERS)}{note}")
    return RUNNERS.get(backend)(spec, shape=(batch, 3, *input_size), threads=threads, workdir=workdir,
                                device=device, precision=precision)


def measure_genotypes_ort(genotypes: list[Genotype], config: ModelConfig, input_size: tuple[int, int], *,
                          threads: int, rounds: int = 5, min_seconds: float = 2.0, warmup_ms: float = 200,
                          seed: int = 0, on_round=None) -> list[dict[str, Any]]:
    """Export every genotype, then time them all on ONNX Runtime CPU, interleaved (benchmark JSON each)."""
    from segfactory.benchmarks.harness import measure_interleaved

    # the stack closes every runner made so far (also when a later one fails), before the folder goes
    with tempfile.TemporaryDirectory(prefix="segfactory-bench-") as tmp, ExitStack() as stack:
        runners = [stack.enter_context(make_runner(ModelSpec(g.key(), genotype=g, config=config), "ort",
                                                   input_size=input_size, threads=threads, workdir=Path(tmp)))
                   for g in genotypes]
        return measure_interleaved(runners, warmup_ms=warmup_ms, min_seconds=min_seconds, rounds=rounds,
                                   seed=seed, on_round=on_round)

