"""Analytic latency estimate for Jetson Orin targets from published specs (a roofline with fixed costs).

ESTIMATE ONLY. Batch-1 CNNs reach 1-30% of an Orin's peak (jetson-latency.md §3), so a bare roofline is
off by 5-50x; this one adds what the published measurements show matters:

    t(kernel) = max(FLOP / (peak * eff_kind), bytes / (bandwidth * eff_mem)) + t_kernel
    t(model)  = t_fixed + sum over kernels

Kernels are what TensorRT would launch: every convolution (BN, activations and elementwise ops fused into
it), pooling, resize, concatenation, reductions and linear layers. ``eff_dense`` (tensor-core convs),
``eff_dw`` (depthwise convs, on CUDA cores), ``eff_mem``, ``t_kernel`` and ``t_fixed`` were fitted once to
the tier-A rows of jetson-latency.md (ResNet-18/50 and MobileNetV2 at 224 on the Orin Nano Super, ResNet-50
INT8 on AGX Orin and Orin NX; ``benchmarks/scripts/fit_roofline.py`` reproduces the fit and prints every row);
the test suite checks each row stays within 1.5x. That is in sample; out of sample (``--out-of-sample``: each
model, then each device, left out of the fit in turn) see :data:`OUT_OF_SAMPLE`. Peaks: FP16 dense = SMs x
2048 FLOP/clk x f_GPU, INT8 2x, TF32 0.5x ("fp32" engines on Orin run TF32); CUDA cores = SMs x 256 FLOP/clk
x f_GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segfactory.factory.errors import InputError

# The figures are benchmarks/scripts/fit_roofline.py --out-of-sample (results/roofline_oos.json): the
# factors refitted with each published model left out in turn, scored on the rows left out. In sample (fitted and
# scored on the same 22 rows) the worst row is x1.22.
OUT_OF_SAMPLE = "x0.74-x1.29 of measured (x0.69-x0.99 for MobileNetV2, the only depthwise model)"
WARNING = ("latency ESTIMATED from published Jetson specs (roofline with fitted overheads; out of sample, each "
           f"published model left out of the fit in turn, estimates were {OUT_OF_SAMPLE}); measure on the device "
           "(--device-url) or use a --lut measured there")


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    sms: int
    gpu_ghz: float
    bandwidth_gbs: float
    mode: str

    def tensor_peak(self, precision: str) -> float:
        """Dense tensor-core FLOP/s for ``precision`` (fp16, int8, fp32 = TF32)."""
        fp16 = self.sms * 2048 * self.gpu_ghz * 1e9
        try:
            return fp16 * {"fp16": 1.0, "int8": 2.0, "fp32": 0.5}[precision]
        except KeyError:
            raise InputError(f"precision {precision!r} is not one of fp16, int8, fp32") from None

    @property
    def cuda_core_peak(self) -> float:
        return self.sms * 256 * self.gpu_ghz * 1e9


SPECS: dict[str, DeviceSpec] = {
    "jetson-orin-nano": DeviceSpec("Jetson Orin Nano 8GB", 8, 1.02, 102.0, "MAXN_SUPER (JetPack 6.2)"),
    "jetson-orin-nx": DeviceSpec("Jetson Orin NX 16GB", 8, 0.918, 102.4, "MAXN"),
    "jetson-agx-orin": DeviceSpec("Jetson AGX Orin 64GB", 16, 1.30, 204.8, "MAXN"),
}


@dataclass(frozen=True)
class Params:
    """Fitted factors (see module docstring)."""

    # fitted by benchmarks/scripts/fit_roofline.py: worst tier-A row x1.22, rms log error 0.086 over 22 rows
    eff_dense: float = 0.55
    eff_dw: float = 0.1
    eff_mem: float = 0.6
    t_kernel_us: float = 6.0
    t_fixed_us: float = 20.0


FITTED = Params()


@dataclass
class Kernel:
    kind: str  # conv | dwconv | memory
    flops: float
    elems: float  # tensor elements read and written (inputs, weights, outputs); bytes = elems x element size


@dataclass
class KernelList:
    kernels: list[Kernel] = field(default_factory=list)

    @property
    def flops(self) -> float:
        return sum(k.flops for k in self.kernels)


BYTES = {"fp16": 2, "int8": 1, "fp32": 4}
_MEMORY = {"max_pool2d_with_indices", "max_pool2d", "upsample_bilinear2d", "upsample_nearest2d", "cat",
           "mean", "avg_pool2d", "_adaptive_avg_pool2d", "adaptive_avg_pool2d", "repeat", "constant_pad_nd"}


def trace_kernels(model: Any, input_shape: tuple[int, ...]) -> KernelList:
    """The kernels ``model`` would run on ``input_shape``, from its aten ops on the meta device."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    out = KernelList()

    def numel(t: Any) -> int:
        return t.numel() if isinstance(t, torch.Tensor) else 0

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            name = func.__name__.split(".")[0]
            if name in ("convolution", "conv2d"):
                x, w = args[0], args[1]
                groups = args[8] if len(args) > 8 else 1
                y = result
                macs = y.numel() * (w.shape[1]) * w.shape[2] * w.shape[3]
                dw = groups > 1 and groups == x.shape[1]
                out.kernels.append(Kernel("dwconv" if dw else "conv", 2.0 * macs, numel(x) + numel(w) + numel(y)))
            elif name in ("addmm", "mm"):
                w = args[-1]
                out.kernels.append(Kernel("conv", 2.0 * result.numel() * w.shape[0],
                                          numel(args[-2]) + numel(w) + numel(result)))
            elif name in _MEMORY:
                first = result[0] if isinstance(result, tuple) else result
                ins = args[0]  # a tensor, or the list of tensors of cat
                n_in = sum(numel(t) for t in ins) if isinstance(ins, (list, tuple)) else numel(ins)
                out.kernels.append(Kernel("memory", 0.0, n_in + numel(first)))
            return result

    with torch.device("meta"):
        model = model.to("meta").eval() if hasattr(model, "to") else model
        x = torch.empty(*input_shape, device="meta")
        with torch.no_grad(), Recorder():
            model(x)
    return out


def kernel_time_s(k: Kernel, spec: DeviceSpec, precision: str, p: Params = FITTED) -> float:
    bw = spec.bandwidth_gbs * 1e9 * p.eff_mem
    if k.kind == "conv":
        compute = k.flops / (spec.tensor_peak(precision) * p.eff_dense)
    elif k.kind == "dwconv":
        compute = k.flops / (spec.cuda_core_peak * 2 * p.eff_dw)  # half2 / dp4a on CUDA cores
    else:
        compute = 0.0
    return max(compute, k.elems * BYTES[precision] / bw) + p.t_kernel_us * 1e-6


def estimate_ms(kernels: KernelList, spec: DeviceSpec, precision: str = "fp16", p: Params = FITTED) -> float:
    """Estimated GPU compute time in ms of one inference (the batch is inside the traced shapes)."""
    return 1000.0 * (p.t_fixed_us * 1e-6 + sum(kernel_time_s(k, spec, precision, p) for k in kernels.kernels))


def estimate_model_ms(model: Any, input_shape: tuple[int, ...], target: str, precision: str = "fp16",
                      p: Params = FITTED) -> float:
    if target not in SPECS:
        raise InputError(f"no published specs for target {target!r}; known: {', '.join(SPECS)}")
    return estimate_ms(trace_kernels(model, input_shape), SPECS[target], precision, p)


# Tier-A rows of jetson-latency.md that torchvision can rebuild: (row, target, model, batch, precision, ms).
# YOLOv8n (row 16) has no torchvision model and is left out.
TIER_A: list[tuple[str, str, str, int, str, float]] = [
    ("1", "jetson-orin-nano", "resnet18", 1, "fp32", 1.578), ("1", "jetson-orin-nano", "resnet18", 1, "fp16", 0.758),
    ("1", "jetson-orin-nano", "resnet18", 1, "int8", 0.485), ("2", "jetson-orin-nano", "resnet18", 8, "fp32", 8.357),
    ("2", "jetson-orin-nano", "resnet18", 8, "fp16", 3.537), ("2", "jetson-orin-nano", "resnet18", 8, "int8", 1.927),
    ("3", "jetson-orin-nano", "resnet50", 1, "fp32", 3.596), ("3", "jetson-orin-nano", "resnet50", 1, "fp16", 1.814),
    ("3", "jetson-orin-nano", "resnet50", 1, "int8", 1.190), ("4", "jetson-orin-nano", "resnet50", 8, "fp32", 19.969),
    ("4", "jetson-orin-nano", "resnet50", 8, "fp16", 8.816), ("4", "jetson-orin-nano", "resnet50", 8, "int8", 4.930),
    ("5", "jetson-orin-nano", "mobilenet_v2", 1, "fp32", 1.386),
    ("5", "jetson-orin-nano", "mobilenet_v2", 1, "fp16", 0.850),
    ("5", "jetson-orin-nano", "mobilenet_v2", 1, "int8", 0.781),
    ("6", "jetson-orin-nano", "mobilenet_v2", 8, "fp32", 8.147),
    ("6", "jetson-orin-nano", "mobilenet_v2", 8, "fp16", 3.925),
    ("6", "jetson-orin-nano", "mobilenet_v2", 8, "int8", 2.446),
    ("7", "jetson-agx-orin", "resnet50", 1, "int8", 0.636), ("8", "jetson-agx-orin", "resnet50", 8, "int8", 2.164),
    ("10", "jetson-orin-nx", "resnet50", 1, "int8", 1.079), ("11", "jetson-orin-nx", "resnet50", 8, "int8", 5.080),
]


def tier_a_kernels() -> dict[tuple[str, int], KernelList]:
    """Traced kernels of the torchvision classifiers of :data:`TIER_A`, keyed by (model, batch)."""
    import torch
    import torchvision.models as tvm

    out: dict[tuple[str, int], KernelList] = {}
    for _, _, name, batch, _, _ in TIER_A:
        if (name, batch) not in out:
            with torch.device("meta"):
                model = getattr(tvm, name)(weights=None)
            out[(name, batch)] = trace_kernels(model, (batch, 3, 224, 224))
    return out


def tier_a_report(p: Params = FITTED) -> list[dict[str, Any]]:
    """Each tier-A row with the estimate and the ratio estimate / published."""
    kernels = tier_a_kernels()
    rows = []
    for row, target, name, batch, precision, ms in TIER_A:
        est = estimate_ms(kernels[(name, batch)], SPECS[target], precision, p)
        rows.append({"row": row, "target": target, "model": name, "batch": batch, "precision": precision,
                     "published_ms": ms, "estimated_ms": est, "ratio": est / ms})
    return rows
