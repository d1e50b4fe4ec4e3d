"""Built-in architectures: small-input versions of the networks of the HUDD case studies.

All take ``in_channels`` and ``input_size`` (square images) so they fit the simulator and
user data alike; classifiers return logits, the keypoint regressor returns
``(batch, 2 * num_keypoints)`` pixel coordinates laid out ``[x0, y0, x1, y1, ...]``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn


def alexnet(num_classes: int, in_channels: int = 1, input_size: int = 64) -> nn.Module:
    """AlexNet-style classifier (conv/ReLU/max-pool features, dropout/linear classifier),
    the architecture of HUDD's gaze and eye-closure case studies, sized for small inputs."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 96, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(96, 64, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )
    side = input_size // 8
    classifier = nn.Sequential(
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(64 * side * side, 256),
        nn.ReLU(inplace=True),
        nn.Dropout(0.3),
        nn.Linear(256, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, num_classes),
    )
    # Named children give stable layer names: features.0, ..., classifier.7.
    return nn.Sequential(OrderedDict(features=features, classifier=classifier))


class _Basic(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus the (projected) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    """Small ResNet-style classifier with BatchNorm and residual additions."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.layer1 = _Basic(width, width, 1)
        self.layer2 = _Basic(width, 2 * width, 2)
        self.layer3 = _Basic(2 * width, 4 * width, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


def resnet(num_classes: int, in_channels: int = 1, input_size: int = 64) -> nn.Module:
    """Small ResNet-style classifier (``input_size`` is accepted for a uniform signature)."""
    return ResNetSmall(num_classes, in_channels)


def kpnet(num_keypoints: int, in_channels: int = 1, input_size: int = 64) -> nn.Module:
    """KpNet-style keypoint regressor: conv/BN/ReLU/max-pool stages, then linear layers
    that output ``2 * num_keypoints`` pixel coordinates."""

    def stage(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]

    side = input_size // 8
    return nn.Sequential(
        *stage(in_channels, 32),
        *stage(32, 64),
        *stage(64, 64),
        nn.Flatten(),
        nn.Linear(64 * side * side, 256),
        nn.ReLU(),
        nn.Linear(256, 2 * num_keypoints),
    )


class _SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: the input times a channel gate ``hardsigmoid(f(mean x))``."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class _InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expansion, depthwise 3x3, squeeze-excitation, 1x1 projection
    (BatchNorm after each convolution, Hardswish), the input added when shapes match."""

    def __init__(self, cin: int, expand: int, cout: int, stride: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(
            nn.Conv2d(cin, expand, 1, bias=False), nn.BatchNorm2d(expand), nn.Hardswish()
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(expand, expand, 3, stride, 1, groups=expand, bias=False),
            nn.BatchNorm2d(expand),
            nn.Hardswish(),
        )
        self.se = _SqueezeExcite(expand, max(8, expand // 4))
        self.project = nn.Sequential(nn.Conv2d(expand, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.residual else out


def mobilenet(num_classes: int, in_channels: int = 1, input_size: int = 64) -> nn.Module:
    """Small MobileNetV3-style classifier (inverted residuals, depthwise convolutions,
    squeeze-excitation gates, Hardswish); ``input_size`` is accepted for a uniform
    signature (global pooling)."""
    stem = nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()
    )
    blocks = nn.Sequential(
        _InvertedResidual(16, 32, 16, 1),
        _InvertedResidual(16, 64, 24, 2),
        _InvertedResidual(24, 72, 24, 1),
        _InvertedResidual(24, 96, 40, 2),
        _InvertedResidual(40, 120, 40, 1),
    )
    head = nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(40, 128),
        nn.Hardswish(),
        nn.Dropout(0.2),
        nn.Linear(128, num_classes),
    )
    return nn.Sequential(OrderedDict(stem=stem, blocks=blocks, head=head))


def mobilenet_v3_small(num_classes: int, in_channels: int = 1, input_size: int = 64) -> nn.Module:
    """torchvision's MobileNetV3-Small (random initialisation), its stem convolution taking
    ``in_channels``; ``input_size`` is accepted for a uniform signature (global pooling)."""
    from torchvision.models import mobilenet_v3_small as build

    model = build(num_classes=num_classes)
    stem = model.features[0][0]
    model.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size,
                                     stem.stride, stem.padding, bias=False)  # fmt: skip
    return model


class _EncoderBlock(nn.Module):
    """Pre-norm transformer block: attention and a GELU MLP, each added to its input."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """A small vision transformer: patch embedding, class token, learned position
    embeddings, pre-norm encoder blocks, a linear head on the class token."""

    def __init__(self, num_classes: int, in_channels: int = 1, input_size: int = 64,
                 patch: int = 8, dim: int = 64, depth: int = 4,
                 heads: int = 4) -> None:  # fmt: skip
        super().__init__()
        if input_size % patch:
            raise ValueError(f"input_size {input_size} is not a multiple of the patch {patch}")
        self.patch = nn.Conv2d(in_channels, dim, patch, stride=patch)
        tokens = (input_size // patch) ** 2
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[_EncoderBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        token = self.class_token.expand(x.shape[0], -1, -1)
        x = torch.cat([token, x], dim=1) + self.position
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit(num_classes: int, in_channels: int = 1, input_size: int = 64) -> nn.Module:
    """Small ViT (8x8 patches, width 64, 4 blocks of 4 heads) for square inputs whose side
    is a multiple of 8."""
    return TinyViT(num_classes, in_channels, input_size)


def torchvision_factory(name: str) -> Callable[..., nn.Module]:
    """The factory behind ``--model torchvision.models:NAME``: torchvision's classifier
    ``name`` with random weights (nothing is downloaded; bring trained weights with
    ``--weights``), ``num_classes`` from the data and, for the ViT and MaxViT families,
    which fix their input size, ``input_size`` from the images. Images get the 3 channels
    of its stem (grey images are converted)."""
    import torchvision.models as tv

    if name not in tv.list_models(module=tv):
        raise ValueError(f"--model torchvision.models:{name}: not a torchvision classifier "
                         "(torchvision.models.list_models(module=torchvision.models))")  # fmt: skip

    def build(num_classes: int = 1000, input_size: int | None = None) -> nn.Module:
        size = {}
        if input_size is not None and name.startswith("vit_"):
            size = {"image_size": input_size}
        elif input_size is not None and name.startswith("maxvit"):
            size = {"input_size": (input_size, input_size)}
        return tv.get_model(name, num_classes=num_classes, **size)

    build.__name__ = build.__qualname__ = name
    return build


def timm_factory(name: str) -> Callable[..., nn.Module]:
    """The factory behind ``--model timm:NAME``: timm's model ``name`` with random weights
    (``pretrained=False``: nothing is downloaded; bring trained weights with
    ``--weights``), ``num_classes`` from the data and, for models with a fixed input size
    (ViTs, Swin, ...), ``img_size`` from the images. Images get the 3 channels of its stem
    (grey images are converted)."""
    try:
        import timm
        from timm.models import get_pretrained_cfg
    except ImportError as exc:  # pragma: no cover - timm is a test dependency
        raise ValueError(f"--model timm:{name}: needs timm (pip install timm)") from exc
    if not timm.is_model(name):
        raise ValueError(f"--model timm:{name}: not a timm model (timm.list_models())")
    cfg = get_pretrained_cfg(name)
    fixed = bool(cfg is not None and cfg.fixed_input_size)

    def build(num_classes: int = 1000, input_size: int | None = None) -> nn.Module:
        size = {"img_size": input_size} if (fixed and input_size is not None) else {}
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **size)

    build.__name__ = build.__qualname__ = name
    return build


BUILTIN = {"alexnet": alexnet, "resnet": resnet, "kpnet": kpnet, "mobilenet": mobilenet,
           "mobilenet_v3_small": mobilenet_v3_small, "vit": vit}  # fmt: skip
"""Built-in factories by name; classifiers take ``num_classes``, kpnet ``num_keypoints``."""
