"""The runner backends, through their registry: each builds and times a tiny model (or says in one line why it
cannot here), and every runner is a context manager that closes itself, also when the body raises."""

from __future__ import annotations

import pytest
from segfactory.benchmarks.models import RUNNERS, ModelSpec, make_runner
from segfactory.factory.errors import InputError, RunError

from tests.agent_fixtures import conv_model

pytest.importorskip("onnx")


@pytest.fixture
def tiny(tmp_path) -> ModelSpec:
    """One conv, as an ONNX file (1, 3, 16, 16) -> (1, 4, 16, 16) and as a torch module, so every backend has one."""
    import torch

    path = tmp_path / "tiny.onnx"
    path.write_bytes(conv_model(0, dynamic=False, size=(16, 16)))
    return ModelSpec("tiny", path=path, module=torch.nn.Conv2d(3, 4, 3, padding=1))


def _make(spec: ModelSpec, backend: str, workdir):
    try:
        return make_runner(spec, backend, input_size=(16, 16), threads=1, workdir=workdir)
    except RunError as e:  # the backend's library or device is absent here (TensorRT, a CUDA provider)
        assert str(e) and "\n" not in str(e)
        pytest.skip(f"backend {backend} is unavailable here: {e}")


def _count_closes(runner) -> list[int]:
    calls: list[int] = []
    close = runner.close
    runner.close = lambda: (calls.append(1), close())[1]  # __exit__ calls self.close(): the instance attribute
    return calls


@pytest.mark.parametrize("backend", RUNNERS.names())
def test_every_runner_backend_times_a_tiny_model_or_says_why(backend, tiny, tmp_path):
    runner = _make(tiny, backend, tmp_path)
    closes = _count_closes(runner)
    with runner as r:
        assert r is runner
        assert r.run_once() > 0
        info = r.describe()
        assert info["input_shape"] == [1, 3, 16, 16] and info["batch"] == 1 and info["backend"].startswith(
            backend.split("-")[0])
    assert closes == [1]


def test_a_runner_closes_when_the_body_raises(tiny, tmp_path):
    runner = _make(tiny, "ort", tmp_path)
    closes = _count_closes(runner)
    with pytest.raises(RuntimeError, match="the body failed"), runner:
        raise RuntimeError("the body failed")
    assert closes == [1] and runner.session is None


def test_unknown_backends_list_the_registered_names(tiny, tmp_path):
    with pytest.raises(InputError, match="backend 'onnx' is not one of ort, ort-cuda, ort-tensorrt, torch, trt$"):
        make_runner(tiny, "onnx", input_size=(16, 16), workdir=tmp_path)
    with pytest.raises(InputError, match="run_trtexec"):  # trtexec times whole runs, it has no runner
        make_runner(tiny, "trtexec", input_size=(16, 16), workdir=tmp_path)
    with pytest.raises(ValueError, match="already registered"):
        RUNNERS.register("ort", lambda *a, **k: None)
