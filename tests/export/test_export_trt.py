"""TensorRT engines (skipped without TensorRT and CUDA) and a scan for TensorRT APIs that 10.x/11.x removed."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from segfactory.export.tensorrt import EngineConfig, tensorrt_available, trtexec_command

from tests.export.test_export_genotypes import SMALL, images, sharpen

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("export", "benchmarks")
# API -> why it is banned. Implicit quantisation and precision flags are gone in 11.x; bindings in 10.x.
REMOVED = {
    r"\.build_engine\(": "builder.build_engine was removed in TensorRT 10: use build_serialized_network",
    r"max_workspace_size": "removed in TensorRT 10: use set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)",
    r"execute_async_v2": "removed in TensorRT 10: use set_tensor_address + execute_async_v3",
    r"BuilderFlag\.(FP16|INT8|FP8|BF16|OBEY_PRECISION_CONSTRAINTS|PREFER_PRECISION_CONSTRAINTS)":
        "precision flags have no effect on strongly typed networks and were removed in TensorRT 11",
    r"IInt8(Entropy|MinMax|Legacy)?Calibrator2?|int8_calibrator":
        "implicit-quantisation calibrators were removed in TensorRT 11: use Q/DQ ONNX",
    r"get_binding_index|binding_is_input|num_bindings|get_binding_shape":
        "binding APIs were removed in TensorRT 10: use the named I/O tensor API",
    r"platform_has_fast_(fp16|int8)": "removed in TensorRT 11",
}

needs_trt = pytest.mark.skipif(tensorrt_available() is not None,
                               reason=f"{tensorrt_available()}: TensorRT engine tests need TensorRT 10.3+ and CUDA")


def removed_api_uses(root: Path, folders=SCANNED) -> list[str]:
    hits = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for pattern, why in REMOVED.items():
                    if re.search(pattern, line):
                        hits.append(f"{path.relative_to(root)}:{number}: {line.strip()}  <- {why}")
    return hits


def test_no_removed_tensorrt_api_in_the_source_tree():
    hits = removed_api_uses(REPO)
    assert not hits, "\n".join(hits)


def test_the_scan_finds_removed_apis(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "old.py").write_text(
        "engine = builder.build_engine(network, config)\nconfig.max_workspace_size = 1 << 30\n"
        "config.set_flag(trt.BuilderFlag.INT8)\nclass C(trt.IInt8EntropyCalibrator2):\n    pass\n"
        "context.execute_async_v2(bindings, stream)\n"
    )
    assert len(removed_api_uses(tmp_path, ("export",))) == 5


def test_trtexec_command_matches_the_python_build(tmp_path):
    import torch
    from segfactory.export.onnx import export_onnx
    from segfactory.factory.model import build_model
    from segfactory.factory.zoo import ZOO

    torch.manual_seed(0)
    path = export_onnx(build_model(ZOO["arch0"], SMALL).eval(), tmp_path / "m.onnx", input_size=(64, 64),
                       dynamic_batch=True, simplify=False)
    command = trtexec_command(path, tmp_path / "m.engine",
                              EngineConfig(workspace_mib=512, timing_cache=str(tmp_path / "tc"), batch=(1, 2, 4)))
    assert "--stronglyTyped" in command and "--memPoolSize=workspace:512M" in command
    assert "--minShapes=image:1x3x64x64" in command and "--optShapes=image:2x3x64x64" in command
    assert "--maxShapes=image:4x3x64x64" in command and f"--timingCacheFile={tmp_path / 'tc'}" in command
    assert "--fp16" not in command and "--int8" not in command  # precision comes from the graph


def test_engine_config_rejects_bad_profiles():
    from segfactory.factory.errors import InputError

    with pytest.raises(InputError):
        EngineConfig(batch=(4, 2, 8))
    with pytest.raises(InputError):
        EngineConfig(workspace_mib=0)


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    import torch
    from segfactory.export.onnx import export_onnx
    from segfactory.export.precision import convert_fp16, quantize_onnx
    from segfactory.factory.model import build_model
    from segfactory.factory.zoo import ZOO

    root = tmp_path_factory.mktemp("trt")
    torch.manual_seed(0)
    model = sharpen(build_model(ZOO["arch1"], SMALL))
    fp32 = export_onnx(model, root / "fp32.onnx", input_size=(64, 96), dynamic_batch=True)
    return {"fp32": fp32, "fp16": convert_fp16(fp32, root / "fp16.onnx"),
            "int8": quantize_onnx(fp32, root / "int8.onnx", images(4, seed=1))}


@pytest.mark.trt
@needs_trt
@pytest.mark.parametrize("precision,min_agreement", [("fp32", 0.999), ("fp16", 0.99), ("int8", 0.9)])
def test_engine_builds_and_matches_onnx_runtime(precision, min_agreement, onnx_models, tmp_path):
    from segfactory.export.tensorrt import check_engine_parity, engine_from_onnx, run_engine

    cache = tmp_path / "timing.cache"
    engine = engine_from_onnx(onnx_models[precision], tmp_path / f"{precision}.engine",
                              EngineConfig(timing_cache=str(cache), batch=(1, 2, 4)))
    assert engine.stat().st_size > 0 and cache.stat().st_size > 0
    parity = check_engine_parity(onnx_models[precision], engine, images(2))
    assert parity["agreement_all"] >= min_agreement, parity
    out = run_engine(engine, np.random.default_rng(0).standard_normal((4, 3, 64, 96)).astype(np.float32))
    assert out.shape == (4, 5, 64, 96)  # the dynamic-batch profile reaches batch 4


@pytest.mark.trt
@needs_trt
def test_parser_errors_are_reported_at_once(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    from segfactory.export.tensorrt import engine_from_onnx
    from segfactory.factory.errors import RunError

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 8, 8])
    nodes = [helper.make_node("NoSuchOp", ["image"], ["a"], domain="segfactory.test"),
             helper.make_node("NoSuchOp", ["a"], ["out"], domain="segfactory.test")]
    graph = helper.make_graph(nodes, "bad", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("segfactory.test", 1)])
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(RunError) as info:
        engine_from_onnx(tmp_path / "bad.onnx", tmp_path / "bad.engine")
    assert "NoSuchOp" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "bad.engine").exists()
