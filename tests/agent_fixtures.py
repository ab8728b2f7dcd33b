"""Tiny ONNX models and raw-socket helpers for the device agent's tests (no torch: onnx.helper only)."""

from __future__ import annotations

import socket
import urllib.parse

import numpy as np


def conv_model(seed: int = 0, out_channels: int = 4, dynamic: bool = True, size: tuple[int, int] = (32, 32)) -> bytes:
    """A one-Conv ONNX model (N, 3, H, W) -> (N, out_channels, H, W); ``seed`` varies its weights (and sha256)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((out_channels, 3, 3, 3)).astype(np.float32), "W")
    node = helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])
    h, w = ("H", "W") if dynamic else size
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N" if dynamic else 1, 3, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N" if dynamic else 1, out_channels, h, w])],
        [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime reads IR 8 everywhere (JetPack 6's 1.18 too)
    return model.SerializeToString()


def external_data_model() -> bytes:
    """A model whose weight points at an external file (the agent must refuse it: no client paths)."""
    import onnx

    model = onnx.load_model_from_string(conv_model(1))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    return model.SerializeToString()


def raw_exchange(url: str, head: bytes, body: bytes = b"", *, close_after_send: bool = False,
                 timeout: float = 10.0) -> bytes:
    """Send ``head`` (request line + headers) and ``body`` on a fresh socket; return what comes back."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head + body)
        if close_after_send:
            return b""
        chunks = []
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return head.startswith(b"HTTP/1.1 100")


def status_of(response: bytes) -> int:
    """The status code of the last response in ``response`` (after an optional 100 Continue)."""
    # HTTP/1.0 where aiohttp answers a request it could not parse (it cannot know the client's version)
    lines = [line for line in response.split(b"\r\n") if line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 "))]
    return int(lines[-1].split()[1]) if lines else 0
