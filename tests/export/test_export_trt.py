"""TensorRT engines (skipped without TensorRT and CUDA) and a scan for TensorRT APIs that 10.x/11.x removed."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from segfactory.export.tensorrt import EngineConfig, tensorrt_available, trtexec_command
from segfactory.factory.errors import InputError

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


# ---- EngineSession: the one TensorRT execution path ------------------------------------------------------------
# Without TensorRT and a GPU here, the session's bookkeeping (shapes, dtypes, addresses, copies, timing, closing)
# runs against a stand-in: a fake ``tensorrt`` module with the TensorRT 10 named-tensor API the session uses, and
# host memory in place of CUDA buffers. The engine "file" is JSON naming its I/O tensors; it computes
# ``out = concat(x, 2 x)`` along the channels. The real thing runs in test_engine_builds_and_matches_onnx_runtime.

MEMORY: dict[int, np.ndarray] = {}  # fake device memory by address


class FakeBuffers:
    name = "fake"
    stream_handle = 7

    def __init__(self):
        self.closed = False

    def alloc(self, shape, dtype):
        buf = np.zeros(shape, dtype)
        MEMORY[id(buf)] = buf
        return buf

    def address(self, buf):
        return id(buf)

    def upload(self, buf, host):
        buf[...] = host

    def download(self, buf, shape, dtype):
        return buf.copy().reshape(shape).astype(dtype)

    def synchronize(self):
        pass

    def record_start(self):
        pass

    def elapsed_since_start(self):
        return 0.25

    def device_name(self):
        return "fake GPU"

    def close(self):
        self.closed = True


class FakeContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses, self.fail = engine, {}, {}, engine.spec.get("fail", False)

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)

    def get_tensor_shape(self, name):
        if name in self.engine.spec["inputs"]:
            return self.shapes.get(name, tuple(self.engine.spec["inputs"][name]))
        n, c, h, w = self.shapes.get("image", self.engine.spec["inputs"]["image"])
        return (n, 2 * c, h, w)

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def execute_async_v3(self, stream_handle):
        assert stream_handle == FakeBuffers.stream_handle
        x = MEMORY[self.addresses["image"]]
        MEMORY[self.addresses["logits"]][...] = np.concatenate([x, 2 * x], axis=1)
        return not self.fail


class FakeEngine:
    def __init__(self, spec):
        self.spec = spec
        self.names = [*spec["inputs"], "logits"]
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return "input" if name in self.spec["inputs"] else "output"

    def get_tensor_shape(self, name):
        return tuple(self.spec["inputs"][name]) if name in self.spec["inputs"] else (-1, -1, -1, -1)

    def get_tensor_dtype(self, name):
        return "float32"

    def create_execution_context(self):
        return FakeContext(self)


def fake_tensorrt():
    import json
    import types

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.9.0"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
    trt.nptype = lambda dt: {"float32": np.float32}[dt]

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return FakeEngine(json.loads(data)) if data.startswith(b"{") else None

    trt.Runtime = Runtime
    return trt


@pytest.fixture
def fake_trt(monkeypatch, tmp_path):
    """A fake tensorrt, fake CUDA buffers for every session, and ``engine(spec)`` writing an engine file."""
    import json
    import sys

    from segfactory.export import tensorrt as trt_module

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    monkeypatch.setattr(trt_module, "tensorrt_available", lambda: None)
    made = []
    monkeypatch.setattr(trt_module, "cuda_buffers", lambda kind="auto": made.append(FakeBuffers()) or made[-1])

    def engine(spec, name="m.engine"):
        path = tmp_path / name
        path.write_bytes(json.dumps(spec).encode() if spec is not None else b"\x00garbage")
        return path

    engine.buffers = made
    return engine


DYNAMIC = {"inputs": {"image": [-1, 3, 4, 5]}}


def test_engine_session_runs_a_dynamic_engine_at_the_given_shape(fake_trt):
    from segfactory.export.tensorrt import EngineSession

    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    with EngineSession(fake_trt(DYNAMIC), input_shape=(2, 3, 4, 5)) as session:
        assert session.inputs == ["image"] and session.outputs == ["logits"]
        assert session.shapes == {"image": (2, 3, 4, 5), "logits": (2, 6, 4, 5)}
        out = session.run(x)["logits"]
        np.testing.assert_array_equal(out, np.concatenate([x, 2 * x], axis=1))
        assert session.time_once() == 0.25 and session.device_name() == "fake GPU"
        with pytest.raises(InputError, match="session made for"):
            session.run(x[:1])
    assert fake_trt.buffers[0].closed and session.context is None


@pytest.mark.parametrize("spec, shape, message", [
    (DYNAMIC, None, "dynamic shape .* give --input-size"),
    (DYNAMIC, (1, 4, 4, 5), "does not fit"),
    ({"inputs": {"image": [1, 3, 4, 5]}}, (2, 3, 4, 5), "fixed shape"),
])
def test_engine_session_shape_errors_are_one_line_and_release_buffers(fake_trt, spec, shape, message):
    from segfactory.export.tensorrt import EngineSession

    with pytest.raises(InputError, match=message) as info:
        EngineSession(fake_trt(spec), input_shape=shape)
    assert "\n" not in str(info.value) and fake_trt.buffers[0].closed


def test_engine_session_failures_are_run_errors(fake_trt):
    from segfactory.export.tensorrt import EngineSession
    from segfactory.factory.errors import RunError

    with pytest.raises(RunError, match="cannot deserialise"):
        EngineSession(fake_trt(None))
    assert fake_trt.buffers[0].closed
    failing = fake_trt({**DYNAMIC, "fail": True}, "f.engine")
    with EngineSession(failing, input_shape=(1, 3, 4, 5)) as session, pytest.raises(RunError, match="execution"):
        session.time_once()


def test_run_engine_and_the_benchmark_runner_share_the_session(fake_trt, tmp_path):
    from segfactory.benchmarks.models import ModelSpec, make_runner
    from segfactory.export.tensorrt import run_engine

    path = fake_trt(DYNAMIC)
    x = np.ones((3, 3, 4, 5), np.float32)
    assert run_engine(path, x).shape == (3, 6, 4, 5)
    with make_runner(ModelSpec("m", path=path), "trt", input_size=(4, 5), batch=2, workdir=tmp_path,
                     precision="fp16") as runner:
        assert runner.run_once() == 0.25
        info = runner.describe()
    assert info["backend"] == "trt" and info["backend_version"] == "10.9.0" and info["input_shape"] == [2, 3, 4, 5]
    assert info["device"] == "fake GPU" and info["buffers"] == "fake"
    assert all(b.closed for b in fake_trt.buffers) and len(fake_trt.buffers) == 2


def test_cuda_python_buffers_round_trip_or_fail_in_one_line():
    import re

    from segfactory.export.cuda_buffers import CudaRuntime, cuda_buffers
    from segfactory.factory.errors import RunError

    if not any(_importable(m) for m in ("cuda.bindings.runtime", "cuda.cudart")):
        pytest.skip("cuda-python is not installed")
    try:
        buffers = cuda_buffers("cuda-python")
    except RunError as e:  # no GPU or driver here: the first call says so, in one line
        assert re.fullmatch(r"CUDA cuda\w+ failed: cuda\w+", str(e)), str(e)
        return
    assert isinstance(buffers, CudaRuntime)
    try:
        host = np.arange(12, dtype=np.float32).reshape(3, 4)
        buf = buffers.alloc(host.shape, host.dtype)
        buffers.upload(buf, host)
        np.testing.assert_array_equal(buffers.download(buf, host.shape, host.dtype), host)
        buffers.record_start()
        assert buffers.elapsed_since_start() >= 0 and buffers.device_name()
    finally:
        buffers.close()


def test_auto_buffers_without_torch_take_cuda_python(monkeypatch):
    import sys

    from segfactory.export.cuda_buffers import CudaRuntime, cuda_buffers
    from segfactory.factory.errors import RunError

    monkeypatch.setitem(sys.modules, "torch", None)  # as on a torch-free Jetson
    try:
        buffers = cuda_buffers("auto")
    except RunError as e:
        assert "available to torch" not in str(e), str(e)  # cuda-python was taken (no GPU, or no cuda-python)
    else:
        assert isinstance(buffers, CudaRuntime)
        buffers.close()
    with pytest.raises(InputError, match="not one of auto, torch, cuda-python"):
        cuda_buffers("pycuda")


def _importable(module: str) -> bool:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
