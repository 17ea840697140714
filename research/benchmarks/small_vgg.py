"""A small VGG-style CNN for MNIST: the architecture family the MTD paper compresses (VGG-11/16 on
CIFAR-10), shrunk to what these machines train in seconds. Used by ``research/benchmarks/methods.py``
through ``adt compress --model research/benchmarks/small_vgg.py:SmallVGG``."""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["SmallVGG"]


class SmallVGG(nn.Module):
    """conv3x3(8)-conv3x3(8)-pool, conv3x3(16)-conv3x3(16)-pool, conv3x3(32)-pool, fc 288->64->10, ReLU
    after every conv and the first fc; 27,938 parameters."""

    input_shape = (1, 28, 28)

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        w = width
        layers: list[nn.Module] = []
        cin = 1
        for cout, pool in ((w, False), (w, True), (2 * w, False), (2 * w, True), (4 * w, True)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
            if pool:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 3 * 3, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
