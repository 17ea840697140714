"""Built-in models: the paper's LeNet-5 and LeNet-300-100 (MNIST) and a CIFAR ResNet-20.

They use only ops the ADT runtime executes (Conv, Gemm, MaxPool, Relu, BatchNorm, Add,
GlobalAveragePool, Flatten), so exported files run without model code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor, nn

from .errors import ModelError

__all__ = ["LeNet5", "LeNet300", "ResNet20", "BuiltinModel", "MODELS", "build_model"]


class LeNet5(nn.Module):
    """Caffe LeNet-5 as in the paper: conv 20@5x5 -> maxpool 2 -> conv 50@5x5 -> maxpool 2 ->
    fc 800->500 -> ReLU -> fc 500->10. Input [N, 1, 28, 28]; 431,080 parameters.

    ``conv_relu=True`` (model ``lenet5-relu``) adds a ReLU after each conv (as many PyTorch LeNet-5s
    do): the same weights and parameter count, one more nonlinearity per conv stage."""

    def __init__(self, num_classes: int = 10, conv_relu: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.pool1: nn.Module = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool2: nn.Module = nn.MaxPool2d(2, 2)
        if conv_relu:  # max-pool and ReLU commute; ReLU after the pool is the cheaper order
            self.pool1 = nn.Sequential(nn.MaxPool2d(2, 2), nn.ReLU())
            self.pool2 = nn.Sequential(nn.MaxPool2d(2, 2), nn.ReLU())
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(800, 500)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


class LeNet300(nn.Module):
    """LeNet-300-100: 784 -> 300 -> ReLU -> 100 -> ReLU -> 10. Input [N, 1, 28, 28] (flattened);
    266,610 parameters."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(784, 300)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(300, 100)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(self.flatten(x))))))


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016) with a 1x1 conv + BN shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (3 stages x 3 blocks, 16/32/64 channels). Input [N, 3, 32, 32]."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.flatten(self.pool(x)))


@dataclass(frozen=True)
class BuiltinModel:
    """A registry entry: how to build the model, one sample's shape, and the built-in dataset it
    trains on (``"mnist"``, or None when ADT has no loader for its data)."""

    name: str
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    dataset: str | None

    def build(self) -> nn.Module:
        """A fresh, randomly initialised instance."""
        return self.factory()


#: The built-in models by name; the CLI's ``--model`` choices and datasets come from here.
MODELS: dict[str, BuiltinModel] = {m.name: m for m in (
    BuiltinModel("lenet5", LeNet5, (1, 28, 28), "mnist"),
    BuiltinModel("lenet5-relu", lambda: LeNet5(conv_relu=True), (1, 28, 28), "mnist"),
    BuiltinModel("lenet300", LeNet300, (1, 28, 28), "mnist"),
    BuiltinModel("resnet20", ResNet20, (3, 32, 32), None),
)}


def build_model(name: str) -> nn.Module:
    """A fresh, randomly initialised built-in model by name (see :data:`MODELS`)."""
    try:
        entry = MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; built-in models: {', '.join(MODELS)}") from None
    return entry.build()
