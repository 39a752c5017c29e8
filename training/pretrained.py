"""Frozen pretrained networks the losses need, always read from files the user names.

* VGG-19 features (perceptual loss): torchvision's layout, keys ``features.N.weight/bias``.
* Hopenet (head-pose teacher): ResNet-50 with three 66-bin heads, keys of deep-head-pose's ``Hopenet``.
* EmoNet (expression encoder): the 8-class AffectNet network of face-analysis/emonet.

Nothing here downloads anything and no network is ever used with random weights: a missing, truncated or
foreign file is a :class:`WeightsError` naming the file and what is wrong, raised before training starts.
Files are read with ``anytalk_core.weights.read_file`` (safetensors, or pickles through
``torch.load(weights_only=True)`` only).
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from anytalk_core.weights import CheckpointError, read_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(ValueError):
    """A pretrained-weights file is missing, unreadable or does not fit the network; names the file."""


# ------------------------------------------------------------------------------------------------
# Reading and strict loading
# ------------------------------------------------------------------------------------------------

def read_state_dict(path: str | os.PathLike, what: str, nested_keys: tuple[str, ...] = ("state_dict", "model")) -> dict:
    """A flat {name: tensor} dict from a safetensors or (weights-only) pickle file."""
    path = os.fspath(path)
    if not path:
        raise WeightsError(f"no {what} weights file named")
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: {what} weights file not found")
    try:
        raw, _ = read_file(path)
    except CheckpointError as exc:
        raise WeightsError(f"{what} weights: {exc}") from None
    for key in nested_keys:  # some trainers wrap the state dict
        if isinstance(raw.get(key), dict):
            raw = raw[key]
    state = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise WeightsError(f"{path}: holds no tensors; expected a {what} state dict")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_strict(module: nn.Module, state: dict, path: str, what: str, ignore_prefixes: tuple[str, ...] = (),
                optional_suffixes: tuple[str, ...] = ("num_batches_tracked",)) -> None:
    """Load every tensor of ``module`` from ``state``; list missing / mis-shaped tensors in one error."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(optional_suffixes)]
    shaped = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    unexpected = [k for k in state if k not in expected and not k.startswith(ignore_prefixes)]
    problems = []
    for label, items in (("missing", missing), ("wrong shape", shaped), ("unexpected", unexpected)):
        if items:
            problems.append(f"{len(items)} {label}: " + ", ".join(items[:3]) + (" ..." if len(items) > 3 else ""))
    if problems:
        raise WeightsError(f"{path}: not a {what} state dict ({'; '.join(problems)})")
    load = {k: state[k].to(expected[k].dtype) for k in expected if k in state}
    module.load_state_dict(load, strict=False)
    for k, v in state.items():
        if k in expected and not torch.isfinite(v.float()).all():
            raise WeightsError(f"{path}: tensor {k} of the {what} weights holds NaN or infinite values")


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


# ------------------------------------------------------------------------------------------------
# VGG-19 features (torchvision layout)
# ------------------------------------------------------------------------------------------------

VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
VGG19_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
VGG19_MIN_SIDE = 16  # pixels: relu5_1 comes after four 2x poolings


class Vgg19Features(nn.Module):
    """``torchvision.models.vgg19().features[:30]`` with the same module indices (and state-dict keys).

    forward(x in 0..1) -> the five activations relu1_1 .. relu5_1 of the ImageNet-normalised input, as the
    face-vid2vid / FOMM perceptual loss uses them.
    """

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers[:30])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = imagenet_normalise(x)
        out = []
        for a, b in VGG19_SLICES:
            for i in range(a, b):
                h = self.features[i](h)
            out.append(h)
        return out


def load_vgg19(path: str | os.PathLike) -> Vgg19Features:
    """VGG-19 features from a torchvision state dict file (e.g. ``vgg19-dcbb9e9d.pth``), frozen."""
    path = os.fspath(path)
    state = read_state_dict(path, "VGG-19")
    if not any(k.startswith("features.") for k in state):
        raise WeightsError(f"{path}: no 'features.N.weight' tensors; expected torchvision's VGG-19 state dict")
    net = Vgg19Features()
    # features.30+ (the last conv block's remaining layers) and the classifier are not used by the loss
    extra = tuple(f"features.{i}." for i in range(30, 40))
    load_strict(net, state, path, "VGG-19", ignore_prefixes=("classifier.",) + extra)
    return freeze(net)


# ------------------------------------------------------------------------------------------------
# Hopenet (deep-head-pose): ResNet-50 + fc_yaw / fc_pitch / fc_roll (66 bins of 3 degrees)
# ------------------------------------------------------------------------------------------------

class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return F.relu(out + identity)


class Hopenet(nn.Module):
    """deep-head-pose's Hopenet(Bottleneck, [3, 4, 6, 3], 66): state-dict compatible.

    forward(x in 0..1, any size) -> (yaw, pitch, roll) in degrees, as face-vid2vid's trainer computes them
    (224x224 bilinear resize, ImageNet normalisation, softmax expectation * 3 - 99).
    """

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3), num_bins: int = 66):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.fc_yaw = nn.Linear(2048, num_bins)
        self.fc_pitch = nn.Linear(2048, num_bins)
        self.fc_roll = nn.Linear(2048, num_bins)
        self.fc_finetune = nn.Linear(2048 + 3, 3)  # vestigial in the released weights
        self.num_bins = num_bins

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
        layers = [_Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [_Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # AvgPool2d(7) on the 7x7 map of a 224 input
        return self.fc_yaw(x), self.fc_pitch(x), self.fc_roll(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(224, 224), mode="bilinear", align_corners=False)  # torchvision Resize on tensors
        logits = self.logits(imagenet_normalise(x))
        idx = torch.arange(self.num_bins, device=images.device, dtype=images.dtype)
        return torch.stack([(F.softmax(l, dim=1) * idx).sum(1) * 3 - 99 for l in logits], dim=1)


def load_hopenet(path: str | os.PathLike) -> Hopenet:
    path = os.fspath(path)
    state = read_state_dict(path, "Hopenet")
    net = Hopenet()
    load_strict(net, state, path, "Hopenet", optional_suffixes=("num_batches_tracked", "fc_finetune.weight",
                                                                  "fc_finetune.bias"))
    return freeze(net)


# ------------------------------------------------------------------------------------------------
# EmoNet (face-analysis/emonet, n_expression = 8): FAN hourglasses + emotion head
# ------------------------------------------------------------------------------------------------

class _ConvBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes // 2)
        self.conv2 = nn.Conv2d(out_planes // 2, out_planes // 4, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes // 4)
        self.conv3 = nn.Conv2d(out_planes // 4, out_planes // 4, 3, padding=1, bias=False)
        self.downsample = None
        if in_planes != out_planes:
            self.downsample = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(),
                                            nn.Conv2d(in_planes, out_planes, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        out = torch.cat((out1, out2, out3), 1)
        return out + (self.downsample(x) if self.downsample is not None else x)


class _HourGlass(nn.Module):
    def __init__(self, depth: int = 4):
        super().__init__()
        self.depth = depth
        self._generate(depth)

    def _generate(self, level: int) -> None:
        self.add_module(f"b1_{level}", _ConvBlock(256, 256))
        self.add_module(f"b2_{level}", _ConvBlock(256, 256))
        if level > 1:
            self._generate(level - 1)
        else:
            self.add_module(f"b2_plus_{level}", _ConvBlock(256, 256))
        self.add_module(f"b3_{level}", _ConvBlock(256, 256))

    def _forward(self, level: int, x: torch.Tensor) -> torch.Tensor:
        up1 = self._modules[f"b1_{level}"](x)
        low1 = self._modules[f"b2_{level}"](F.max_pool2d(x, 2, stride=2))
        if level > 1:
            low2 = self._forward(level - 1, low1)
        else:
            low2 = self._modules[f"b2_plus_{level}"](low1)
        low3 = self._modules[f"b3_{level}"](low2)
        return up1 + F.interpolate(low3, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self.depth, x)


class EmoNet(nn.Module):
    """EmoNet(num_modules=2, n_expression=8, n_reg=2, n_blocks=4, attention=True), state-dict compatible.

    ``forward`` returns the pooled 256-d emotion features (``emo_feat_2`` of EMOCA's loss, the authors'
    choice) of images resized to 256x256; ``logits`` the 10 head outputs (8 expressions, valence, arousal).
    """

    def __init__(self, num_modules: int = 2, n_expression: int = 8, n_reg: int = 2, n_blocks: int = 4):
        super().__init__()
        self.num_modules = num_modules
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = _ConvBlock(64, 128)
        self.conv3 = _ConvBlock(128, 128)
        self.conv4 = _ConvBlock(128, 256)
        for i in range(num_modules):
            self.add_module(f"m{i}", _HourGlass(4))
            self.add_module(f"top_m_{i}", _ConvBlock(256, 256))
            self.add_module(f"conv_last{i}", nn.Conv2d(256, 256, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(256))
            self.add_module(f"l{i}", nn.Conv2d(256, 68, 1))
            if i < num_modules - 1:
                self.add_module(f"bl{i}", nn.Conv2d(256, 256, 1))
                self.add_module(f"al{i}", nn.Conv2d(68, 256, 1))
        self.conv1x1_input_emo_2 = nn.Conv2d(256 * (num_modules + 1), 256, 1)
        convs: list[nn.Module] = []
        for _ in range(n_blocks):
            convs += [_ConvBlock(256, 256), nn.MaxPool2d(2, 2)]
        self.emo_net_2 = nn.Sequential(*convs)
        self.emo_fc_2 = nn.Sequential(nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(),
                                      nn.Linear(128, n_expression + n_reg))

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(256, 256), mode="bilinear", align_corners=False)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(self.conv2(x), 2, stride=2)
        x = self.conv4(self.conv3(x))
        previous = x
        hg_features = []
        tmp_out = None
        for i in range(self.num_modules):
            ll = self._modules[f"top_m_{i}"](self._modules[f"m{i}"](previous))
            ll = F.relu(self._modules[f"bn_end{i}"](self._modules[f"conv_last{i}"](ll)))
            tmp_out = self._modules[f"l{i}"](ll)
            if i < self.num_modules - 1:
                ll = self._modules[f"bl{i}"](ll)
                previous = previous + ll + self._modules[f"al{i}"](tmp_out)
            hg_features.append(ll)
        mask = torch.sum(tmp_out, dim=1, keepdim=True)
        emo_feat = torch.cat((x, torch.cat(hg_features, dim=1) * mask), dim=1)
        out = self.emo_net_2(self.conv1x1_input_emo_2(emo_feat))
        return F.avg_pool2d(out, 4).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pooled(images)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.emo_fc_2(self.pooled(images))


def load_emonet(path: str | os.PathLike) -> EmoNet:
    path = os.fspath(path)
    state = read_state_dict(path, "EmoNet")
    net = EmoNet()
    load_strict(net, state, path, "EmoNet")
    return freeze(net)
