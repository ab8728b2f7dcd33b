"""ONNX export options (dynamic batch, labels output, uint8 input, dynamo), FP16 and INT8 graphs, the predictor."""

from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
from segfactory.export.onnx import export_onnx, get_metadata, graph_io
from segfactory.export.parity import check_parity
from segfactory.export.precision import check_qdq, convert_fp16, quantize_onnx
from segfactory.export.predictor import OnnxPredictor
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError, RunError
from segfactory.factory.genotype import sample_genotype
from segfactory.factory.model import build_model
from segfactory.factory.zoo import ZOO

from tests.export.test_export_genotypes import SMALL, images, sharpen

SIZE = (64, 96)


@pytest.fixture(scope="module")
def model():
    import torch

    torch.manual_seed(0)
    return sharpen(build_model(ZOO["arch1"], SMALL))


@pytest.fixture(scope="module")
def fp32_dynamic(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "m.onnx", input_size=SIZE, dynamic_batch=True)


def test_graph_is_checker_clean_self_contained_and_described(fp32_dynamic):
    proto = onnx.load(str(fp32_dynamic))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 17
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert list(fp32_dynamic.parent.iterdir()) == [fp32_dynamic]  # one file, no external data beside it
    io = graph_io(proto)
    assert io["inputs"][0] == {"name": "image", "shape": ["batch", 3, 64, 96], "dtype": "float32"}
    assert io["outputs"][0] == {"name": "logits", "shape": ["batch", 5, 64, 96], "dtype": "float32"}
    meta = get_metadata(proto)
    assert meta["output"] == "logits" and meta["input"] == "float"
    assert ModelConfig.from_dict(meta["model_config"]) == SMALL
    assert meta["genotype"] == ZOO["arch1"].to_dict()


def test_dynamic_batch_runs_at_1_and_4(model, fp32_dynamic):
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(fp32_dynamic), providers=["CPUExecutionProvider"])
    for batch in (1, 4):
        x = torch.randn(batch, 3, *SIZE)
        (y,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            ref = model(x).numpy()
        assert y.shape == (batch, 5, *SIZE)
        np.testing.assert_allclose(y, ref, rtol=1e-3, atol=1e-4)


def test_labels_output_and_uint8_input_give_the_float_models_labels(model, fp32_dynamic, tmp_path):
    imgs = images(3)
    reference = OnnxPredictor(fp32_dynamic)(imgs)
    for output, input_dtype in (("labels", "float"), ("logits", "uint8"), ("labels", "uint8")):
        path = export_onnx(model, tmp_path / f"{output}-{input_dtype}.onnx", input_size=SIZE, output=output,
                           input_dtype=input_dtype, dynamic_batch=True)
        io = graph_io(path)
        assert io["inputs"][0]["dtype"] == ("uint8" if input_dtype == "uint8" else "float32")
        if output == "labels":
            assert io["outputs"][0] == {"name": "labels", "shape": ["batch", *SIZE], "dtype": "uint8"}
        labels = OnnxPredictor(path)(imgs)
        assert labels.shape == reference.shape
        assert (labels == reference).mean() >= 0.999
        parity = check_parity(model, path, imgs)
        assert parity["passed"] and parity["agreement"] >= 0.999


@pytest.mark.parametrize("size", [(72, 96), (36, 44), (45, 61)])  # odd sizes reach the stride-2 convolutions
def test_simplified_graph_with_tf_same_padding_matches(size, tmp_path):
    """TF-'SAME' padding computes its pads from the input shape; onnxslim's shape inference once mis-folded them."""
    import torch

    torch.manual_seed(0)
    config = SMALL.with_(encoder_padding="tf_same", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    model = sharpen(build_model(ZOO["arch0"], config))
    path = export_onnx(model, tmp_path / "tf.onnx", input_size=size, dynamic_batch=True)  # simplified
    parity = check_parity(model, path, images(2, size=size), rtol=1e-3, atol=1e-5, require_close=True)
    assert parity["within_tolerance"] == 1.0 and parity["passed"], parity


def test_predictor_returns_labels_at_the_images_size(fp32_dynamic):
    predictor = OnnxPredictor(fp32_dynamic)
    labels = predictor(images(2, size=(90, 120)))
    assert labels.shape == (2, 90, 120) and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < 5
    assert predictor.num_classes == 5
    with pytest.raises(InputError):
        predictor(np.zeros((2, 8, 8), np.uint8))


def test_fp16_keeps_io_types_and_runs(model, fp32_dynamic, tmp_path):
    path = convert_fp16(fp32_dynamic, tmp_path / "fp16.onnx")
    proto = onnx.load(str(path))
    io = graph_io(proto)
    assert io["inputs"][0]["dtype"] == "float32" and io["outputs"][0]["dtype"] == "float32"
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    assert get_metadata(proto)["precision"] == "fp16"
    parity = check_parity(model, path, images(2), precision="fp16", min_agreement=None)
    assert parity["agreement"] >= 0.99, parity
    assert parity["max_abs_diff"] < 0.1 * max(1.0, parity["max_abs_diff"] / max(parity["max_rel_diff"], 1e-12))


def test_int8_is_tensorrt_form_qdq_and_runs(model, fp32_dynamic, tmp_path):
    calib = images(4, seed=1)
    path = quantize_onnx(fp32_dynamic, tmp_path / "int8.onnx", calib)
    proto = onnx.load(str(path))
    counts = check_qdq(proto)  # INT8 zero points, all 0
    assert counts["QuantizeLinear"] > 0 and counts["per_channel"] > 0
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    assert all(producers.get(c.input[1]) == "DequantizeLinear" for c in convs)  # every weight quantised
    assert get_metadata(proto)["calibration"] == {"images": 4, "method": "percentile"}
    parity = check_parity(model, path, images(2), precision="int8", min_agreement=None)
    assert parity["agreement_all"] > 0.8, parity  # INT8 moves a few boundary pixels, not the picture


def test_int8_rejects_bad_calibration_images(fp32_dynamic, tmp_path):
    with pytest.raises(InputError):
        quantize_onnx(fp32_dynamic, tmp_path / "x.onnx", np.zeros((2, 8, 8), np.float32))
    assert not (tmp_path / "x.onnx").exists()


def test_failed_export_leaves_existing_file_untouched(model, tmp_path):
    target = tmp_path / "keep.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(InputError):
        export_onnx(model, target, input_size=(4, 4))
    with pytest.raises(InputError):
        export_onnx(model, target, input_size=SIZE, opset=11)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.onnx"]


def test_export_failure_is_a_one_line_run_error(tmp_path):
    import torch

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise ValueError("no\nsecond line")

    with pytest.raises(RunError) as info:
        export_onnx(Broken(), tmp_path / "b.onnx", input_size=SIZE)
    assert "\n" not in str(info.value)


TORCH_EXPORT_CASES = [("arch0", ZOO["arch0"]), ("arch1", ZOO["arch1"])] + [
    (f"seed{s}", sample_genotype(random.Random(1000 + s))) for s in range(5)
]


@pytest.mark.parametrize("name,genotype", TORCH_EXPORT_CASES, ids=[c[0] for c in TORCH_EXPORT_CASES])
def test_torch_export_export_matches_eager(name, genotype):
    import torch

    torch.manual_seed(0)
    model = build_model(genotype, SMALL).eval()
    x = torch.randn(1, 3, *SIZE)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-5)


def _dynamo_case(name, genotype, tmp_path):
    import torch

    torch.manual_seed(0)
    model = sharpen(build_model(genotype, SMALL))
    path = export_onnx(model, tmp_path / f"{name}.onnx", input_size=SIZE, opset=18, exporter="dynamo",
                       simplify=False)
    assert graph_io(path)["outputs"][0]["shape"] == [1, 5, *SIZE]
    parity = check_parity(model, path, images(1), rtol=1e-3, atol=1e-5, require_close=True)
    assert parity["passed"] and parity["within_tolerance"] == 1.0, parity


@pytest.mark.parametrize("name", sorted(ZOO))
def test_dynamo_exporter_on_the_zoo(name, tmp_path):
    _dynamo_case(name, ZOO[name], tmp_path)


# The dynamo exporter takes ~10 s a model here; issue 2 asks for the zoo and five genotypes, so all run in CI.
@pytest.mark.parametrize("seed", range(5))
def test_dynamo_exporter_on_random_genotypes(seed, tmp_path):
    _dynamo_case(f"seed{seed}", sample_genotype(random.Random(1000 + seed)), tmp_path)
