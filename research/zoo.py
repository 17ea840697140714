"""Small models that follow torchvision's layer structure (and torch's sequence layers), for the model zoo
tests: each family's building blocks exactly as torchvision writes them (same modules, same forward),
at widths small enough for the default test run. PyPI's torchvision wheels need CUDA torch, so the
tests cannot import torchvision itself here. Used by tests/exporter/test_model_zoo.py and
research/benchmarks/model_zoo.py.

Every entry: ``name -> (factory, example input)``; the example is a batch of 2.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["FAMILIES", "RATIOS", "train_briefly", "resnet18", "mobilenet_v2"]


def _cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU):
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU) else act())
    return nn.Sequential(*layers)


# --- ResNet (torchvision.models.resnet.BasicBlock) ---------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nn.Module):
    def __init__(self, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, 2)
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d((1, 1)), nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --- VGG (torchvision.models.vgg, with batch norm) ---------------------------------------------------
class VGG(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(_cbr(3, 8), nn.MaxPool2d(2, 2), _cbr(8, 16), nn.MaxPool2d(2, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(16 * 4, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --- MobileNetV2 (torchvision.models.mobilenetv2.InvertedResidual) ------------------------------------
class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        layers = [_cbr(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        layers += [_cbr(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), _cbr(hidden, cout, 1, act=None)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(_cbr(3, 8, stride=2, act=nn.ReLU6), InvertedResidual(8, 8, 1, 1),
                                      InvertedResidual(8, 12, 2, 6), InvertedResidual(12, 12, 1, 6),
                                      _cbr(12, 32, 1, act=nn.ReLU6))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# --- MobileNetV3 / EfficientNet (SqueezeExcitation, Hardswish / SiLU) ---------------------------------
class SqueezeExcitation(nn.Module):
    def __init__(self, c: int, squeeze: int, scale_activation: type[nn.Module]) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.activation, self.scale_activation = nn.ReLU(), scale_activation()

    def forward(self, x):
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return s * x


class MobileNetV3(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _cbr(3, 8, stride=2, act=nn.Hardswish),
            nn.Sequential(_cbr(8, 8, 3, 2, groups=8), SqueezeExcitation(8, 8, nn.Hardsigmoid), _cbr(8, 8, 1, act=None)),
            nn.Sequential(_cbr(8, 24, 1, act=nn.Hardswish), _cbr(24, 24, 3, groups=24, act=nn.Hardswish),
                          _cbr(24, 16, 1, act=None)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(16, 32), nn.Hardswish(inplace=True), nn.Dropout(0.2),
                                        nn.Linear(32, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        self.block = nn.Sequential(_cbr(cin, hidden, 1, act=nn.SiLU), _cbr(hidden, hidden, 3, stride, groups=hidden, act=nn.SiLU),
                                   SqueezeExcitation(hidden, max(1, cin // 4), nn.Sigmoid), _cbr(hidden, cout, 1, act=None))

    def forward(self, x):
        return x + self.block(x) if self.use_res_connect else self.block(x)


class EfficientNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(_cbr(3, 8, stride=2, act=nn.SiLU), MBConv(8, 8, 1, 1), MBConv(8, 12, 6, 2),
                                      _cbr(12, 32, 1, act=nn.SiLU))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --- SqueezeNet (torchvision.models.squeezenet.Fire) --------------------------------------------------
class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze, self.squeeze_activation = nn.Conv2d(cin, squeeze, 1), nn.ReLU(inplace=True)
        self.expand1x1, self.expand1x1_activation = nn.Conv2d(squeeze, e1, 1), nn.ReLU(inplace=True)
        self.expand3x3, self.expand3x3_activation = nn.Conv2d(squeeze, e3, 3, padding=1), nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      Fire(16, 4, 8, 8), Fire(16, 4, 8, 8))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(16, classes, 1), nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


# --- ShuffleNetV2 (torchvision.models.shufflenetv2) ---------------------------------------------------
def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, -1, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        b = c // 2
        self.branch2 = nn.Sequential(_cbr(b, b, 1), _cbr(b, b, 3, groups=b, act=None), _cbr(b, b, 1))

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((x1, self.branch2(x2)), dim=1), 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1, self.maxpool = _cbr(3, 16, stride=2), nn.MaxPool2d(3, 2, 1)
        self.stage2 = ShuffleUnit(16)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.stage2(self.maxpool(self.conv1(x)))
        return self.fc(x.mean([2, 3]))


# --- DenseNet (torchvision.models.densenet._DenseLayer) -----------------------------------------------
class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, 2 * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(2 * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))], 1)


class DenseNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), DenseLayer(16, 8), DenseLayer(24, 8),
                                      nn.BatchNorm2d(32))
        self.classifier = nn.Linear(32, classes)

    def forward(self, x):
        out = nn.functional.relu(self.features(x))
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


# --- sequences ----------------------------------------------------------------------------------------
class Transformer(nn.Module):
    def __init__(self, vocab: int = 50, d: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.encoder = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, activation="gelu", batch_first=True)
        self.fc = nn.Linear(d, classes)

    def forward(self, ids):
        return self.fc(self.encoder(self.emb(ids)).mean(dim=1))


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.Module], classes: int = 4) -> None:
        super().__init__()
        self.rnn = cell(8, 16, batch_first=True)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


class Padded(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = nn.functional.pad(x, (1, 2, 1, 2), mode="reflect")
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def _image():
    return (torch.randn(2, 3, 32, 32),)


FAMILIES: dict[str, tuple[Callable[[], nn.Module], Callable[[], tuple]]] = {
    "resnet": (ResNet, _image),
    "vgg": (VGG, _image),
    "mobilenet_v2": (MobileNetV2, _image),
    "mobilenet_v3": (MobileNetV3, _image),
    "efficientnet": (EfficientNet, _image),
    "squeezenet": (SqueezeNet, _image),
    "shufflenet_v2": (ShuffleNetV2, _image),
    "densenet": (DenseNet, _image),
    "transformer": (Transformer, lambda: (torch.randint(0, 50, (2, 6)),)),
    "lstm": (lambda: Recurrent(nn.LSTM), lambda: (torch.randn(2, 5, 8),)),
    "gru": (lambda: Recurrent(nn.GRU), lambda: (torch.randn(2, 5, 8),)),
    "pad_reducemean": (Padded, _image),
}

#: Planner ratios for the smallest families, which keep most values in layers too small to plan (under
#: MIN_NUMEL weights, BatchNorm, attention's packed projection): 2.0 would leave nothing to plan.
RATIOS: dict[str, float] = {"mobilenet_v3": 1.2, "shufflenet_v2": 1.2, "transformer": 1.2}


def train_briefly(model: nn.Module, x: torch.Tensor, steps: int = 3) -> None:
    """A few Adam steps on random labels, so that weights and BatchNorm statistics leave their initial
    values before an export; leaves ``model`` in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        out = model(x)
        nn.functional.cross_entropy(out, torch.randint(0, out.shape[1], (len(x),))).backward()
        opt.step()
    model.eval()


# --- full-size torchvision ResNet-18 and MobileNetV2 (issue 20 item 7) --------------------------------
# Fixtures for `adt compress --model research.zoo:resnet18 --model-args num_classes=10` where torchvision
# cannot be imported: the same modules, module paths (so torchvision state_dicts load unchanged), forward
# and weight init as torchvision.models.resnet18 / mobilenet_v2, called the same way (weights=None only:
# nothing is downloaded).
def _no_weights(weights: object) -> None:
    if weights is not None:
        raise ValueError(f"research.zoo builds untrained models only (weights=None), got weights={weights!r}")


class TVBasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock (expansion 1)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TVResNet(nn.Module):
    """torchvision.models.resnet.ResNet with BasicBlock (groups 1, width 64, no dilation)."""

    def __init__(self, layers: tuple[int, int, int, int] = (2, 2, 2, 2), num_classes: int = 1000,
                 zero_init_residual: bool = False) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * TVBasicBlock.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, TVBasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * TVBasicBlock.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * TVBasicBlock.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * TVBasicBlock.expansion))
        layers = [TVBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * TVBasicBlock.expansion
        layers += [TVBasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000, zero_init_residual: bool = False, weights: None = None) -> nn.Module:
    """torchvision.models.resnet18(weights=None, num_classes=..., zero_init_residual=...): 11,689,512
    parameters at 1000 classes."""
    _no_weights(weights)
    return TVResNet((2, 2, 2, 2), num_classes=num_classes, zero_init_residual=zero_init_residual)


def _make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """torchvision.models._utils._make_divisible: round channels to a multiple of ``divisor``, never
    dropping more than 10%."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class Conv2dNormActivation(nn.Sequential):
    """torchvision.ops.misc.Conv2dNormActivation with BatchNorm2d: conv (no bias), BN, activation."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 activation_layer: type[nn.Module] | None = nn.ReLU) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                                             bias=False), nn.BatchNorm2d(cout)]
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)
        self.out_channels = cout


class TVInvertedResidual(nn.Module):
    """torchvision.models.mobilenetv2.InvertedResidual."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden_dim, kernel_size=1, activation_layer=nn.ReLU6))
        layers += [Conv2dNormActivation(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim, activation_layer=nn.ReLU6),
                   nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup
        self._is_cn = stride > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class TVMobileNetV2(nn.Module):
    """torchvision.models.mobilenetv2.MobileNetV2 (the default inverted-residual setting)."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, round_nearest: int = 8,
                 dropout: float = 0.2) -> None:
        super().__init__()
        input_channel, last_channel = 32, 1280
        setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                   [6, 320, 1, 1]]
        input_channel = _make_divisible(input_channel * width_mult, round_nearest)
        self.last_channel = _make_divisible(last_channel * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [Conv2dNormActivation(3, input_channel, stride=2, activation_layer=nn.ReLU6)]
        for t, c, n, s in setting:
            output_channel = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(TVInvertedResidual(input_channel, output_channel, s if i == 0 else 1, expand_ratio=t))
                input_channel = output_channel
        features.append(Conv2dNormActivation(input_channel, self.last_channel, kernel_size=1, activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, round_nearest: int = 8, dropout: float = 0.2,
                 weights: None = None) -> nn.Module:
    """torchvision.models.mobilenet_v2(weights=None, num_classes=..., width_mult=...): 3,504,872
    parameters at 1000 classes and width 1."""
    _no_weights(weights)
    return TVMobileNetV2(num_classes=num_classes, width_mult=width_mult, round_nearest=round_nearest, dropout=dropout)
