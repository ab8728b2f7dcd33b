"""Convert the TF1 MobileNetV2 1.0/224 TFLite classifier into torchvision's MobileNetV2 (TF-SAME padding).

The .tflite flatbuffer is parsed with the pure-Python ``tflite`` package: no TensorFlow. Its 53 weighted ops
(CONV_2D, DEPTHWISE_CONV_2D and, in some exports, a FULLY_CONNECTED classifier) come in the same order as the
convolutions of ``torchvision.models.mobilenet_v2()`` followed by its classifier, so they are matched one to
one, shapes and strides checked. Weights are dequantised as ``(q - zero_point) * scale`` (per tensor, or per
channel along ``quantized_dimension``); BatchNorm is already folded into the convs, so each BN becomes an
identity carrying the folded bias. :func:`import_tflite` then keeps the encoder's blocks, re-estimates their
BN statistics on real images (:func:`~segfactory.factory.encoder.reestimate_bn`) and writes a segfactory
encoder weights file (format in :mod:`segfactory.factory.encoder_weights`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from segfactory.factory.errors import InputError
from segfactory.factory.io import sha256_file

# The input convention of the TF-slim weights: x / 127.5 - 1, i.e. mean = std = 0.5 on [0, 1] pixels.
TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)
LICENCE = (
    "Apache-2.0, the licence of github.com/google-coral/test_data (commit 104342d2d3480b3e66203073dac24f4e2dbb4c41), "
    "whose mobilenet_v2_1.0_224_quant.tflite these weights are converted from (dequantised, first 7 blocks kept, "
    "BN statistics re-estimated) by segfactory; see factory/weights/README.md"
)
SOURCE = "google-coral/test_data mobilenet_v2_1.0_224_quant.tflite (TF1 slim MobileNetV2 1.0/224, ImageNet)"
ENCODER_BLOCKS = 7  # features.0 .. features.6
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

_WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_TYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 9: np.int8}  # tflite.TensorType values we meet


@dataclass(frozen=True)
class WeightedOp:
    """One weighted TFLite op, dequantised: ``weight`` in PyTorch layout (OIHW, C1HW or OI)."""

    kind: str  # CONV_2D | DEPTHWISE_CONV_2D | FULLY_CONNECTED
    name: str  # the weight tensor's name, for error messages
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int]


def read_weighted_ops(path: str | Path) -> list[WeightedOp]:
    """The weighted ops of a .tflite file, in graph order, dequantised to float32 in PyTorch layout."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"TFLite file {path} does not exist")
    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise InputError(f"TFLite file {path} is not a TFLite flatbuffer (no 'TFL3' identifier)")
    try:
        return _parse(buf)
    except InputError as e:
        raise InputError(f"TFLite file {path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a truncated or corrupt flatbuffer fails anywhere inside
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise InputError(f"TFLite file {path} is corrupt or unsupported: {first}") from None


def _parse(buf: bytes) -> list[WeightedOp]:
    import tflite

    model = tflite.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() < 1:
        raise InputError("has no subgraph")
    graph = model.Subgraphs(0)
    op_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        if kind not in _WEIGHTED:
            continue
        w_t = graph.Tensors(op.Inputs(1))
        weight = _tensor(model, buf, w_t)
        has_bias = op.InputsLength() > 2 and op.Inputs(2) >= 0
        bias = _tensor(model, buf, graph.Tensors(op.Inputs(2))) if has_bias else None
        stride = (1, 1)
        if kind == "CONV_2D":
            weight = weight.transpose(0, 3, 1, 2)  # OHWI -> OIHW
            opts = tflite.Conv2DOptions()
            opts.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
            stride = (opts.StrideH(), opts.StrideW())
        elif kind == "DEPTHWISE_CONV_2D":
            weight = weight.transpose(3, 0, 1, 2)  # 1HWC -> C1HW
            opts = tflite.DepthwiseConv2DOptions()
            opts.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
            stride = (opts.StrideH(), opts.StrideW())
            if opts.DepthMultiplier() not in (0, 1):
                raise InputError(f"op {i} has depth multiplier {opts.DepthMultiplier()}, not 1")
        if bias is None:
            bias = np.zeros(weight.shape[0], np.float32)
        name = w_t.Name().decode("utf-8", "replace")
        ops.append(WeightedOp(kind, name, np.ascontiguousarray(weight), bias, stride))
    return ops


def _tensor(model, buf: bytes, tensor) -> np.ndarray:
    """A constant tensor as float32: ``(q - zero_point) * scale``, per tensor or per channel."""
    dtype = _TYPES.get(tensor.Type())
    name = tensor.Name().decode("utf-8", "replace")
    if dtype is None:
        raise InputError(f"tensor {name} has unsupported type {tensor.Type()}")
    buffer = model.Buffers(tensor.Buffer())
    if buffer.Offset() > 1:  # large models keep the data after the flatbuffer
        raw = buf[buffer.Offset() : buffer.Offset() + buffer.Size()]
    else:
        raw = buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
    shape = tuple(int(s) for s in tensor.ShapeAsNumpy())
    values = np.frombuffer(raw, dtype=dtype)
    if values.size != int(np.prod(shape)):
        raise InputError(f"tensor {name} holds {values.size} values, its shape {shape} needs {int(np.prod(shape))}")
    values = values.reshape(shape)
    if dtype == np.float32:
        return values.astype(np.float32)
    q = tensor.Quantization()
    if q is None or q.ScaleLength() == 0:
        raise InputError(f"tensor {name} is quantised but has no scale")
    scale = q.ScaleAsNumpy().astype(np.float64)
    zero = q.ZeroPointAsNumpy().astype(np.float64) if q.ZeroPointLength() else np.zeros_like(scale)
    if scale.size > 1:  # per channel along quantized_dimension
        view = [1] * len(shape)
        view[q.QuantizedDimension()] = scale.size
        scale, zero = scale.reshape(view), zero.reshape(view)
    return ((values.astype(np.float64) - zero) * scale).astype(np.float32)


def convert_tflite(path: str | Path) -> dict[str, Any]:
    """The whole torchvision MobileNetV2 state dict (TF-SAME padding, BN identities) from a TFLite classifier."""
    import torch
    from segfactory.factory.encoder import mobilenet_v2
    from torch import nn

    ops = read_weighted_ops(path)
    model = mobilenet_v2(padding="tf_same")
    # (conv, bn) pairs in graph order; torchvision puts every conv's BN right after it.
    modules = list(model.features.modules())
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    bns = [m for m in modules if isinstance(m, nn.BatchNorm2d)]
    linear = model.classifier[1]
    if len(ops) != len(convs) + 1:
        raise InputError(
            f"TFLite file {path} has {len(ops)} weighted ops, MobileNetV2 1.0 needs {len(convs) + 1}: not this model"
        )
    with torch.no_grad():
        for i, (op, conv, bn) in enumerate(zip(ops, convs, bns)):
            depthwise = conv.groups > 1
            if (op.kind == "DEPTHWISE_CONV_2D") != depthwise or tuple(op.weight.shape) != tuple(conv.weight.shape):
                raise InputError(
                    f"TFLite file {path}: op {i} ({op.kind} {list(op.weight.shape)}, {op.name}) does not match "
                    f"MobileNetV2's {'depthwise ' if depthwise else ''}conv {list(conv.weight.shape)}: not this model"
                )
            if op.stride != tuple(conv.stride):
                raise InputError(f"TFLite file {path}: op {i} has stride {op.stride}, MobileNetV2 needs {conv.stride}")
            conv.weight.copy_(torch.from_numpy(op.weight))
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(op.bias))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(1 - eps + eps) = x
        head = ops[-1]
        weight = head.weight.reshape(head.weight.shape[0], -1)
        if weight.shape[1] != linear.in_features or weight.shape[0] not in (1000, 1001):
            raise InputError(f"TFLite file {path}: classifier {list(head.weight.shape)} is not 1280 -> 1000/1001")
        drop = weight.shape[0] - 1000  # row 0 is TF-slim's 'background' class
        linear.weight.copy_(torch.from_numpy(weight[drop:]))
        linear.bias.copy_(torch.from_numpy(head.bias[drop:]))
    return model.state_dict()


def load_bn_images(directory: str | Path, count: int, seed: int, size: int = 224):
    """``count`` seeded random ``size`` x ``size`` crops (randomly flipped) of the images in ``directory``.

    Returns a float tensor (count, 3, size, size) normalised as the TF weights expect: x / 127.5 - 1.
    """
    import torch
    from PIL import Image

    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"--bn-images {directory} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"--bn-images {directory} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(files)) for _ in range(-(-count // len(files)))])[:count]
    crops = np.empty((count, size, size, 3), np.uint8)
    for k, idx in enumerate(order):
        try:
            with Image.open(files[idx]) as im:
                pixels = np.asarray(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001 - any decoding problem is a bad input file
            raise InputError(f"image {files[idx]} cannot be read: {str(e).splitlines()[0][:120]}") from None
        h, w = pixels.shape[:2]
        if h < size or w < size:
            raise InputError(f"image {files[idx]} is {h}x{w}, smaller than the {size}x{size} crops")
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        crop = pixels[top : top + size, left : left + size]
        crops[k] = crop[:, ::-1] if rng.random() < 0.5 else crop
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def encoder_state(full_state: dict[str, Any]) -> dict[str, Any]:
    """The ``features.0`` .. ``features.6`` entries of a whole-network state dict."""
    keep = tuple(f"features.{i}." for i in range(ENCODER_BLOCKS))
    return {k: v for k, v in full_state.items() if k.startswith(keep)}


def _encoder_weights(in_path: Path, bn_images: Path | None, seed: int, num_bn_images: int
                     ) -> tuple[dict[str, Any], int]:
    """(the encoder's state dict from the TFLite file, BN images used), BN re-estimated where images are given."""
    import torch
    from segfactory.factory.encoder import Encoder, reestimate_bn

    encoder = Encoder(padding="tf_same")
    encoder.load_state_dict(encoder_state(convert_tflite(in_path)), strict=True)
    used = 0
    if bn_images is not None:
        torch.manual_seed(seed)
        images = load_bn_images(bn_images, num_bn_images, seed)
        reestimate_bn(encoder, images)
        used = len(images)
    return {k: v.detach().clone().contiguous() for k, v in encoder.state_dict().items()}, used


def import_tflite(
    in_path: str | Path,
    out_path: str | Path,
    bn_images: Path | None = None,
    seed: int = 0,
    num_bn_images: int = 256,
    *,
    command: str | None = None,
) -> dict[str, Any]:
    """Convert ``in_path`` and write the segfactory encoder weights file ``out_path`` (atomically).

    With ``bn_images`` the encoder's BN statistics are re-estimated on ``num_bn_images`` seeded random crops
    of those images (eval outputs unchanged, training-mode BN no longer destroys the features). ``command``
    is the command line recorded in ``made_by`` (by default the equivalent ``segfactory`` command).
    Returns a summary: output path, bytes, tensors, parameters, sha256 of the input, BN images used.
    """
    import torch
    from segfactory.factory.encoder_weights import FORMAT
    from segfactory.factory.io import atomic_write

    if num_bn_images < 1:
        raise InputError(f"--num-images {num_bn_images} must be at least 1")
    in_path, out_path = Path(in_path), Path(out_path)
    state, used = _encoder_weights(in_path, bn_images, seed, num_bn_images)
    if command is None:
        argv = ["segfactory", "weights", "import-tflite", str(in_path), str(out_path)]
        if bn_images is not None:
            argv += ["--bn-images", str(bn_images), "--seed", str(seed), "--num-images", str(num_bn_images)]
        command = shlex.join(argv)
    digest = sha256_file(in_path)
    data = {
        "format": FORMAT,
        "state_dict": state,
        "padding": "tf_same",
        "mean": list(TF_MEAN),
        "std": list(TF_STD),
        "source": SOURCE,
        "licence": LICENCE,
        "made_by": {
            "command": command,
            "tflite_file": in_path.name,
            "tflite_sha256": digest,
            "bn_images": str(bn_images) if bn_images is not None else None,
            "num_bn_images": used,
            "seed": seed,
            "torch": str(torch.__version__),
        },
    }
    atomic_write(out_path, lambda p: torch.save(data, p))
    return {
        "out": str(out_path),
        "bytes": out_path.stat().st_size,
        "tensors": len(state),
        "params": int(sum(v.numel() for k, v in state.items() if k.endswith(("weight", "bias")))),
        "tflite_sha256": digest,
        "bn_images": used,
        "seed": seed,
    }
