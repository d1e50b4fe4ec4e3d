"""Built-in architectures: small-input versions of the networks of the HUDD case studies.

All take ``in_channels`` and ``input_size`` (square images) so they fit the simulator and
user data alike; classifiers return logits, the keypoint regressor returns
``(batch, 2 * num_keypoints)`` pixel coordinates laid out ``[x0, y0, x1, y1, ...]``.
"""

from __future__ import annotations

from collections import OrderedDict

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


BUILTIN = {"alexnet": alexnet, "resnet": resnet, "kpnet": kpnet}
"""Built-in factories by name; classifiers take ``num_classes``, kpnet ``num_keypoints``."""
