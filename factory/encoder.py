"""The fixed encoder: the first three MobileNetV2 stages (torchvision's ``features[:7]``), taps at /4 and /8.

Input (1, 3, 64, 64) -> E0 (1, 24, 16, 16) after ``features[3]``, E1 (1, 32, 8, 8) after ``features[6]``;
55,488 parameters. With ``padding="tf_same"`` the stride-2 convolutions pad as TensorFlow's 'SAME' does (the
smaller half before, the larger after), which TF-trained weights need; the output sizes are the same as with
torchvision's symmetric padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OUT_CHANNELS = (24, 32)
REDUCTIONS = (4, 8)
TAPS = (3, 6)  # E0 after features[3], E1 after features[6]


def tf_same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TensorFlow 'SAME' along one axis of length ``size``."""
    effective = (kernel - 1) * dilation + 1
    out = (size + stride - 1) // stride  # ceil; no floor division of negatives: exported to ONNX, Div truncates
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class TFSameConv2d(nn.Conv2d):
    """A Conv2d that pads like TensorFlow 'SAME' for whatever input size it gets (same parameter names)."""

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = tf_same_pads(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = tf_same_pads(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return self._conv_forward(x, self.weight, self.bias)


def use_tf_same_padding(module: nn.Module) -> nn.Module:
    """Replace every strided Conv2d in ``module`` by a :class:`TFSameConv2d` holding the same parameters.

    Stride-1 convolutions are left alone: for odd kernels TF 'SAME' is symmetric there.
    """
    for name, child in list(module.named_children()):
        if type(child) is nn.Conv2d and max(child.stride) > 1:
            conv = TFSameConv2d(
                child.in_channels, child.out_channels, child.kernel_size, child.stride, 0, child.dilation,
                child.groups, child.bias is not None,
            )
            conv.weight = child.weight
            if child.bias is not None:
                conv.bias = child.bias
            setattr(module, name, conv)
        else:
            use_tf_same_padding(child)
    return module


def mobilenet_v2(padding: str = "symmetric", num_classes: int = 1000) -> nn.Module:
    """A whole (randomly initialised) torchvision MobileNetV2 1.0 with the given padding mode."""
    from torchvision.models import mobilenet_v2 as tv_mobilenet_v2

    model = tv_mobilenet_v2(weights=None, num_classes=num_classes)
    return use_tf_same_padding(model) if padding == "tf_same" else model


class Encoder(nn.Module):
    """MobileNetV2 ``features[:7]`` returning ``(E0, E1)``: 24 ch at stride 4 and 32 ch at stride 8."""

    out_channels = OUT_CHANNELS
    reductions = REDUCTIONS

    def __init__(self, padding: str = "tf_same") -> None:
        super().__init__()
        self.features = nn.Sequential(*list(mobilenet_v2(padding).features[: TAPS[1] + 1]))
        self.frozen_bn = False

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        e0 = self.features[: TAPS[0] + 1](x)  # (N, 24, H/4, W/4)
        e1 = self.features[TAPS[0] + 1 :](e0)  # (N, 32, H/8, W/8)
        return e0, e1

    def freeze_bn(self, frozen: bool = True) -> Encoder:
        """Keep every BatchNorm in eval mode (running statistics, no updates) even while training."""
        self.frozen_bn = frozen
        return self.train(self.training)

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode)
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self


@torch.no_grad()
def reestimate_bn(encoder: nn.Module, images: Tensor, batch_size: int = 16) -> None:
    """Set every BN's running statistics to the mean and variance its input has over ``images``.

    After conversion from folded TFLite weights the BNs are identities (mean 0, var 1 - eps, bias = folded
    bias). Re-expressing each as ``gamma = sqrt(var + eps)``, ``beta = bias + mean`` with the measured
    ``mean``/``var`` leaves eval outputs unchanged while training-mode BN (batch statistics) now sees inputs
    that look like those it normalises: it no longer wrecks the pretrained features.
    """
    bns = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    stats: dict[nn.Module, tuple[int, Tensor, Tensor]] = {}  # BN -> (count, mean, var), float64

    def hook(module, inputs, output):
        # Two-pass float32 moments per batch (a float64 copy of every activation is 3x slower), merged
        # across batches in float64 with Chan's formula: no E[x^2] - E[x]^2 cancellation.
        x = inputs[0]
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
        n, mean, var = x.numel() // x.shape[1], mean.double(), var.double()
        if module in stats:
            n0, m0, v0 = stats[module]
            total, delta = n0 + n, mean - m0
            mean, var = m0 + delta * (n / total), (v0 * n0 + var * n + delta * delta * (n0 * n / total)) / total
            n = total
        stats[module] = (n, mean, var)

    handles = [bn.register_forward_hook(hook) for bn in bns]
    was_training = encoder.training
    encoder.eval()
    try:
        for i in range(0, len(images), batch_size):
            encoder(images[i : i + batch_size])
    finally:
        for h in handles:
            h.remove()
        encoder.train(was_training)
    for bn in bns:
        _, mean, var = stats[bn]
        # Current affine map (eval): y = (x - m0) / sqrt(v0 + eps) * g0 + b0; keep it identical.
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        shift = bn.bias.double() - bn.running_mean.double() * scale
        new_std = torch.sqrt(var + bn.eps)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(scale * new_std)
        bn.bias.copy_(shift + scale * mean)
