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

REFERENCES = ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large")


@dataclass
class ModelSpec:
    """One model to time: exactly one of ``path`` (ONNX/engine), ``genotype`` (+config) or ``reference``."""

    name: str
    path: Path | None = None
    genotype: Genotype | None = None
    config: ModelConfig | None = None
    reference: str | None = None
    module: Any = None  # a loaded torch module (checkpoints)


def reference_model(name: str, num_classes: int = 21):
    """torchvision's reference (weights=None, weights_backbone=None), returning logits (not the dict)."""
    from torch import nn
    from torchvision.models import segmentation

    if name not in REFERENCES:
        raise InputError(f"reference model {name!r} is not one of {', '.join(REFERENCES)}")
    net = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=num_classes)

    class Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)["out"]

    return Logits().eval()


def torch_module(spec: ModelSpec):
    if spec.module is not None:
        return spec.module
    if spec.genotype is not None:
        from segfactory.factory.model import build_model

        return build_model(spec.genotype, spec.config, load_weights=False).eval()
    if spec.reference is not None:
        return reference_model(spec.reference, spec.config.num_classes if spec.config else 21)
    raise InputError(f"{spec.name}: an ONNX file or engine cannot run on the torch backend")


def export_to(spec: ModelSpec, directory: Path, input_size: tuple[int, int], batch: int = 1) -> Path:
    """An ONNX file of ``spec`` in ``directory`` (the file itself when it already is one)."""
    if spec.path is not None:
        return spec.path
    module = torch_module(spec)
    path = directory / f"{_safe(spec.name)}.onnx"
    if spec.reference is not None:
        import warnings

        import torch

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.randn(batch, 3, *input_size),), str(path), input_names=["image"],
                              output_names=["logits"], opset_version=17, dynamo=False)
        return path
    from segfactory.export.onnx import export_onnx

    return export_onnx(module, path, input_size=input_size, dynamic_batch=batch != 1)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "model"


# Runner backends: name -> factory(spec, *, shape, threads, workdir, device, precision) -> Runner. trtexec is not
# here: it times a whole run in a subprocess (benchmarks.trtexec.run_trtexec), not one inference at a time.
RunnerFactory = Callable[..., Any]
RUNNERS: Registry[RunnerFactory] = Registry("runner backend")


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
        note = " (trtexec times whole runs: benchmarks.trtexec.run_trtexec)" if backend == "trtexec" else ""
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

