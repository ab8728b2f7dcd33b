"""The build's deployment stages: export each precision (parity-gated), check the latency limit still holds,
evaluate every exported model on val, and benchmark them all on the target beside arch0 and the references."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segfactory.benchmarks.targets import target_class
from segfactory.factory.errors import RunError
from segfactory.search.pipeline.state import BuildState

Progress = Any

ARTEFACT_NAMES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


def _input_size(state: BuildState) -> tuple[int, int]:
    from segfactory.factory.io import read_json

    return tuple(read_json(state.out / "pick.json", "pick file")["input_size"])


def _exports(state: BuildState) -> list[tuple[str, str, str, Path]]:
    """(model name, precision, checkpoint, artefact path) of every export: the built model in each precision, the
    baselines in FP32 and, where asked, INT8 (so that each INT8 figure has its reference beside it)."""
    o, trained = state.options, state.stages["train"]
    out = [("model", p, trained["model"]["checkpoint"], state.out / ARTEFACT_NAMES[p]) for p in o.precisions]
    for name in trained:
        if name == "model":
            continue
        for p in ("fp32", "int8"):
            if p in o.precisions:
                suffix = ".onnx" if p == "fp32" else f".{p}.onnx"
                out.append((name, p, trained[name]["checkpoint"], state.out / "baselines" / f"{name}{suffix}"))
    return out


def stage_export(state: BuildState, progress: Progress) -> dict[str, Any]:
    """Each precision of the built model (FP32 parity >= 99.9% or the export fails), the baselines, and where
    the target is a Jetson and TensorRT is here, engines; an artefact already exported is kept."""
    from segfactory.export.api import ExportOptions, export_model
    from segfactory.export.card import read_card
    from segfactory.search.pipeline.reuse import reuse_export

    o = state.options
    size = _input_size(state)
    results: dict[str, Any] = {}
    for i, (name, precision, checkpoint, path) in enumerate(_exports(state)):
        progress({"kind": "status", "message": f"exporting {name} {precision} ({i + 1}/{len(_exports(state))})"})
        reused = reuse_export(state, name, precision, path, size)  # a --baselines-from export, copied
        if not (path.is_file() and read_card(path)):  # a finished export has its file and a matching card
            export_model(path, ExportOptions(input_size=size, precision=precision, data=o.search.data),
                         checkpoint=state.out / checkpoint, command=f"segfactory build --out {state.out}")
        card = read_card(path)
        results.setdefault(name, {})[precision] = {
            "file": str(path.relative_to(state.out)), "card": str(path.relative_to(state.out)) + ".json",
            "parity": (card.get("parity") or {}).get("agreement"), "params": card.get("params"),
            "macs": card.get("macs"), **({"reused_from": reused} if reused else {})}
    if target_class(o.search.target).engines:
        results["engines"] = _engines(state, size)
    return results


def _engines(state: BuildState, size: tuple[int, int]) -> dict[str, Any]:
    """TensorRT engines of the built model where TensorRT is here; else what to run on the device."""
    from segfactory.export.api import ExportOptions, export_model
    from segfactory.export.tensorrt import tensorrt_available

    why = tensorrt_available()
    if why:
        return {"built": False, "reason": f"{why}: the ONNX files are the deliverable; build engines on the device "
                                          "(trtexec, or segfactory export --format trt there)"}
    done = {}
    for precision in state.options.precisions:
        engine = state.out / ARTEFACT_NAMES[precision].replace(".onnx", ".engine")
        export_model(engine, ExportOptions(input_size=size, fmt="trt", precision=precision,
                                           data=state.options.search.data),
                     checkpoint=state.out / state.stages["train"]["model"]["checkpoint"])
        done[precision] = str(engine.relative_to(state.out))
    return {"built": True, "engines": done}


def _latency_of(state: BuildState, files: dict[str, Path], reference: str) -> dict[str, Any]:
    """Latency of ONNX ``files`` on the build's target: on this host interleaved with ``reference`` (ONNX Runtime,
    the search's latency threads), elsewhere through the target (agent, table or estimate) by architecture."""
    from segfactory.benchmarks.bench import run_bench
    from segfactory.benchmarks.models import ModelSpec

    s = state.options.search
    size = _input_size(state)
    backend = target_class(s.target).bench_backend  # a target timed on this host: its runner
    if backend:
        specs = [ModelSpec(name, path=path) for name, path in files.items()]
        results = run_bench(specs, backend=backend, input_size=size, threads=s.latency_threads or 1, progress=False)
        return {r["model"]: r for r in results}
    return _target_latency(state, files, size)


def _target_latency(state: BuildState, files: dict[str, Path], size) -> dict[str, Any]:
    from segfactory.benchmarks.targets import get_target
    from segfactory.export.card import read_card
    from segfactory.factory.config import ModelConfig
    from segfactory.factory.zoo import arch_from_dict

    s = state.options.search
    target = get_target(s.target, lut=s.lut, device_url=s.device_url, device_token_file=s.device_token_file)
    out = {}
    for name, path in files.items():
        card = read_card(path)
        arch = arch_from_dict(card.get("arch") or card["genotype"])
        lat = target.latency(arch, ModelConfig.from_dict(card["model_config"]), size)
        out[name] = {"median_ms": lat.ms, "latency_source": lat.source, "model": name,
                     **{k: v for k, v in lat.detail.items() if k in ("p90_ms", "p99_ms", "warning")}}
    return out


def stage_check(state: BuildState, progress: Progress) -> dict[str, Any]:
    """The trained, exported FP32 model still meets the latency limit (measured beside arch0)."""
    from segfactory.search.limits import LATENCY, Limits

    limits = Limits.of(state.options.search)
    files = {"arch0": _arch0_onnx(state), "model": state.out / ARTEFACT_NAMES["fp32"]}
    progress({"kind": "status", "message": "timing model.onnx beside arch0"})
    lat = _latency_of(state, files, "arch0")
    ms, ref = lat["model"]["median_ms"], lat["arch0"]["median_ms"]
    ratio = lat["model"].get("ratio_to_first", ms / ref)
    result = {"latency_ms": ms, "arch0_ms": ref, "ratio": ratio, "source": lat["model"].get("latency_source"),
              "limit": limits.describe(LATENCY),
              "meets_limit": limits.admits({"latency_ms": ms, "latency_ratio": ratio}, keys=LATENCY)}
    if not result["meets_limit"]:
        raise RunError(f"the exported model runs at {ms:.1f} ms ({ratio:.3f} x arch0 beside it), over "
                       f"{limits.describe(LATENCY)}; its search measured it within: rerun the check on a quiet host "
                       f"(segfactory build --resume) or loosen the limit")
    return result


def _arch0_onnx(state: BuildState) -> Path:
    """arch0 as released (the search's latency reference), exported at the build's size: the trained baseline's
    ONNX where the build trained one, else an untrained one (latency only)."""
    from segfactory.export.api import ExportOptions, export_model
    from segfactory.factory.config import ModelConfig
    from segfactory.factory.io import read_json
    from segfactory.search.context import reference_config

    path = state.out / "baselines" / "arch0.latency.onnx"
    if "arch0" in state.stages.get("train", {}):
        return state.out / "baselines" / "arch0.onnx"
    if not path.is_file():
        deploy = ModelConfig.from_dict(read_json(state.out / "pick.json", "pick file")["model_config"])
        export_model(path, ExportOptions(input_size=_input_size(state), data=None), arch="arch0",
                     config=reference_config(deploy))
    return path


def stage_evaluate(state: BuildState, progress: Progress) -> dict[str, Any]:
    """Every exported ONNX model on the val split (ONNX Runtime): mIoU, mean accuracy, fwIoU, per-class IoU."""
    from segfactory.export.predictor import OnnxPredictor
    from segfactory.factory.datasets import open_dataset
    from segfactory.factory.evaluate import evaluate
    from segfactory.search.pipeline.reuse import reused_figures

    dataset = open_dataset(state.options.search.data, "val")
    out: dict[str, Any] = {}
    for name, by_precision in state.stages["export"].items():
        if name == "engines":
            continue
        for precision, info in by_precision.items():
            figures = reused_figures(state, name, precision, info)  # a --baselines-from export: DIR's figures
            if figures is None:
                progress({"kind": "status", "message": f"evaluating {name} {precision} on val"})
                m = evaluate(OnnxPredictor(state.out / info["file"]), dataset, progress=False)
                figures = {k: m[k] for k in ("miou", "macc", "fwiou", "score", "pixel_acc", "per_class_iou",
                                             "num_images")}
            out.setdefault(name, {})[precision] = figures
    out["class_names"] = list(dataset.class_names)
    return out


def stage_bench(state: BuildState, progress: Progress) -> dict[str, Any]:
    """Latency of every exported model on the target, interleaved (arch0 first: ratios are to it)."""
    trained_arch0 = "arch0" in state.stages["train"]
    files = {} if trained_arch0 else {"arch0 (untrained)": _arch0_onnx(state)}
    for name, by_precision in sorted(state.stages["export"].items(), key=lambda kv: kv[0] != "arch0"):
        if name == "engines":
            continue
        for precision, info in by_precision.items():
            files[f"{name} {precision}"] = state.out / info["file"]
    progress({"kind": "status", "message": f"timing {len(files)} models interleaved"})
    results = _latency_of(state, files, next(iter(files)))
    return {"target": state.options.search.target, "reference": next(iter(files)), "results": results}
