"""EfficientNet-Lite0, 1 and 2 (Tan and Le 2019; the TensorFlow "lite" variants: no squeeze-excitation,
ReLU6, stem and head not scaled), with the parameter names of the published PyTorch weights, and the
backbone that :class:`boneage.learning.models.BoneAgeNet` wraps around them.

:class:`LiteBackbone` runs in two parts, ``trunk`` (the stem and the first blocks) and ``rest``, so
that the output of frozen first blocks can be computed once and the rest trained on it
(``train.cache_blocks``, :mod:`boneage.learning.frozen`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Per size: each stage's
# repeats and output channels (the published weights' shapes) and the resolution it was trained at.
LITE_KERNELS, LITE_STRIDES, LITE_EXPANSIONS = (3, 3, 5, 3, 5, 5, 3), (1, 2, 2, 2, 1, 2, 1), (1, 6, 6, 6, 6, 6, 6)
LITE_SIZES = {
    "efficientnet_lite0": ((1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320), 224),
    "efficientnet_lite1": ((1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320), 240),
    "efficientnet_lite2": ((1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352), 260),
}


def _bn(c):
    return nn.BatchNorm2d(c, momentum=0.01, eps=1e-3)


def check_antialias(arch: str) -> None:
    """Blur-pooled down-sampling (``antialias``) is built into this module's networks only: other
    archs are named and refused, by the training plan and by the model alike."""
    if not arch.startswith("efficientnet_lite"):
        raise ValueError(f"antialias is built for efficientnet_lite0|1|2, not {arch}")


class BlurPool(nn.Module):
    """Anti-aliased down-sampling (Zhang 2019, "Making convolutional networks shift-invariant again"):
    each channel low-passed by the 3 x 3 binomial filter, then every second pixel kept. It has no
    parameters, so that a network's state dict, pretrained weights included, is the same with it."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3), persistent=False)

    def forward(self, x):
        c = x.shape[1]
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel.to(x.dtype).expand(c, 1, 3, 3),
                        stride=2, groups=c)


def _antialias(conv: nn.Conv2d) -> nn.Module:
    """A stride-2 convolution made stride 1, to be followed by :class:`BlurPool`; else nothing to follow."""
    if conv.stride == (2, 2):
        conv.stride = (1, 1)
        return BlurPool()
    return nn.Identity()


class MBConv(nn.Module):
    def __init__(self, inp: int, out: int, kernel: int, stride: int, expand: int, drop: float):
        super().__init__()
        mid = inp * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(inp, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, (kernel - 1) // 2, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out, 1, bias=False)
        self._bn2 = _bn(out)
        self.skip = stride == 1 and inp == out
        self.drop = drop
        self.down = nn.Identity()  # BlurPool once anti-aliased (EfficientNetLite.antialias)

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.down(F.relu6(self._bn1(self._depthwise_conv(y))))
        y = self._bn2(self._project_conv(y))
        if self.skip:
            if self.training and self.drop > 0:  # stochastic depth per sample
                keep = torch.rand(y.shape[0], 1, 1, 1, device=y.device, dtype=y.dtype) >= self.drop
                y = y * keep / (1 - self.drop)
            y = y + x
        return y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0, 1 or 2 (``arch``) with the parameter names of the published PyTorch weights."""

    def __init__(self, arch: str = "efficientnet_lite0", in_channels: int = 3, drop_connect: float = 0.2,
                 num_classes: int = 1000):
        super().__init__()
        repeats, channels, _ = LITE_SIZES[arch]
        self._conv_stem = nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False)
        self._bn0 = _bn(32)
        blocks, inp = [], 32
        for n, out, kernel, stride, expand in zip(repeats, channels, LITE_KERNELS, LITE_STRIDES, LITE_EXPANSIONS):
            for i in range(n):
                rate = drop_connect * len(blocks) / sum(repeats)
                blocks.append(MBConv(inp if i == 0 else out, out, kernel, stride if i == 0 else 1, expand, rate))
            inp = out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(channels[-1], 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)
        self._stem_down = nn.Identity()

    def antialias(self) -> None:
        """Every stride-2 convolution (the stem's, each stage's first depthwise) at stride 1, its
        activation then down-sampled by :class:`BlurPool`: the same weights, a feature map that moves
        less when the image moves by less than the stride. Costs those layers 4x their compute."""
        self._stem_down = _antialias(self._conv_stem)
        for block in self._blocks:
            block.down = _antialias(block._depthwise_conv)

    def trunk(self, x: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """The feature map after the stem and the first ``n_blocks`` blocks."""
        x = self._stem_down(F.relu6(self._bn0(self._conv_stem(x))))
        for block in self._blocks[:n_blocks]:
            x = block(x)
        return x

    def head_map(self, x: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """The last feature map (1280 channels) from the output of ``trunk(., n_blocks)``."""
        for block in self._blocks[n_blocks:]:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def features(self, x):
        return self.head_map(self.trunk(x, 0), 0)

    def forward(self, x):
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class LiteBackbone(nn.Module):
    """EfficientNet-Lite features, pooled; ``head_act`` marks the last feature map for Grad-CAM."""

    def __init__(self, net: EfficientNetLite):
        super().__init__()
        self.net = net
        self.head_act = nn.Identity()

    def trunk(self, x: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """The feature map after the stem and the first ``n_blocks`` blocks."""
        return self.net.trunk(x, n_blocks)

    def rest(self, x: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """The pooled features from the output of ``trunk(., n_blocks)``."""
        return torch.flatten(F.adaptive_avg_pool2d(self.head_act(self.net.head_map(x, n_blocks)), 1), 1)

    def forward(self, x):
        return self.rest(self.trunk(x, 0), 0)
