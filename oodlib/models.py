"""Classifiers whose encoder the OOD attack targets (Section 2.1: ``z = f(x)``, ``p = g(z)``).

Every model takes images in [0, 1] (NCHW float32) and does its own input normalisation as its first layer
("preprocessing on x can be considered as the very first layer inside of the model f(x)", Section 2.1).
Each exposes

- ``features(x)``      the encoder output z, i.e. the input of the last linear layer (the paper's latent vector);
- ``forward(x)``       the logits ``g(z)``;
- ``feature_maps(x)``  a list of intermediate feature maps, for multi-layer detectors (Mahalanobis, Gram).

Default-profile models are small CNNs that train on MNIST-5k in seconds on two CPU cores; the paper profile uses
adapters of torchvision's ResNet-18 and DenseNet-121 (Section 3.1, Appendix B).
"""

from __future__ import annotations

import abc
from typing import Sequence

import torch
from torch import Tensor, nn

ARCHS: tuple[str, ...] = ("small_cnn", "small_resnet", "mlp", "resnet18", "densenet121")


class Normalize(nn.Module):
    """Per-channel standardisation ``(x - mean) / std`` as the model's first layer."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module, abc.ABC):
    """A classifier split into an encoder ``features`` and a linear head ``head``.

    Subclasses implement ``_feature_maps(h)`` (returning the list of intermediate maps, the last of which is
    pooled into z) on the normalised input; this base class adds normalisation, pooling and the head.
    """

    in_channels: int
    image_size: int
    num_classes: int
    latent_dim: int

    def __init__(self, in_channels: int, image_size: int, num_classes: int, latent_dim: int,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.in_channels, self.image_size = in_channels, image_size
        self.num_classes, self.latent_dim = num_classes, latent_dim
        self.normalize = Normalize(mean, std)

    @abc.abstractmethod
    def _feature_maps(self, h: Tensor) -> list[Tensor]:
        """Feature maps of the normalised input, shallow to deep; the last one pools into z."""

    def _pool(self, last_map: Tensor) -> Tensor:
        return last_map.mean(dim=(2, 3)) if last_map.dim() == 4 else last_map

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        """Intermediate feature maps (each (N, C, H, W) or (N, D)), shallow to deep."""
        return self._feature_maps(self.normalize(x))

    def features(self, x: Tensor) -> Tensor:
        """The encoder output z (the input of the final linear layer)."""
        return self._pool(self.feature_maps(x)[-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _conv_block(c_in: int, c_out: int, norm: str) -> nn.Sequential:
    norm_layer: nn.Module
    if norm == "batch":
        norm_layer = nn.BatchNorm2d(c_out)
    elif norm == "instance":
        norm_layer = nn.InstanceNorm2d(c_out, affine=True)
    elif norm == "none":
        norm_layer = nn.Identity()
    else:
        raise ValueError(f"unknown norm {norm!r}; choose from 'batch', 'instance', 'none'")
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none"), norm_layer, nn.ReLU(inplace=False))


class SmallCNN(Classifier):
    """Three conv stages (widths w, 2w, 4w; 2× max-pool after the first two), global average pool, then a
    ``latent_dim`` ReLU layer as the encoder output z and a linear head.

    ``norm="instance"`` mirrors Appendix B.2, where the authors replaced batch norm by instance norm.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, width: int = 16,
                 latent_dim: int = 64, norm: str = "batch", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, image_size, num_classes, latent_dim,
                         mean or [0.5] * in_channels, std or [0.25] * in_channels)
        self.stage1 = _conv_block(in_channels, width, norm)
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), _conv_block(width, 2 * width, norm))
        self.stage3 = nn.Sequential(nn.MaxPool2d(2), _conv_block(2 * width, 4 * width, norm))
        self.embed = nn.Sequential(nn.Linear(4 * width, latent_dim), nn.ReLU())
        self.head = nn.Linear(latent_dim, num_classes)

    def _feature_maps(self, h: Tensor) -> list[Tensor]:
        m1 = self.stage1(h)
        m2 = self.stage2(m1)
        m3 = self.stage3(m2)
        return [m1, m2, m3, self.embed(m3.mean(dim=(2, 3)))]


class _ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.skip(x))


class SmallResNet(Classifier):
    """A small ResNet (stem + three residual stages, widths w, 2w, 4w): the default profile's second encoder,
    standing in for the paper's ResNet-18 / DenseNet-121 pair. z is the global-average-pooled last stage."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, width: int = 16,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, image_size, num_classes, 4 * width,
                         mean or [0.5] * in_channels, std or [0.25] * in_channels)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.layer1 = _ResidualBlock(width, width, 1)
        self.layer2 = _ResidualBlock(width, 2 * width, 2)
        self.layer3 = _ResidualBlock(2 * width, 4 * width, 2)
        self.head = nn.Linear(4 * width, num_classes)

    def _feature_maps(self, h: Tensor) -> list[Tensor]:
        maps = [self.stem(h)]
        for layer in (self.layer1, self.layer2, self.layer3):
            maps.append(layer(maps[-1]))
        return maps


class MLP(Classifier):
    """A ReLU multilayer perceptron (piecewise linear; used by the null-space chapter, Section 2.2)."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 hidden: Sequence[int] = (256, 64), mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, image_size, num_classes, hidden[-1],
                         mean or [0.5] * in_channels, std or [0.25] * in_channels)
        sizes = [in_channels * image_size * image_size, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(hidden[-1], num_classes)

    def _feature_maps(self, h: Tensor) -> list[Tensor]:
        maps, h = [], h.flatten(1)
        for layer in self.layers:
            h = torch.relu(layer(h))
            maps.append(h)
        return maps


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchvisionResNet18(Classifier):
    """Adapter of ``torchvision.models.resnet18`` (Section 3.1; Appendix B.1–B.2): z = the 512-d pooled features.

    ``norm="instance"`` swaps every BatchNorm2d for InstanceNorm2d as in Appendix B.2; ``norm="none"`` drops them
    (identity), as the JEM authors' wide ResNet has no normalisation (Appendix J).

    Raises
    ------
    ValueError
        Unknown ``norm``, or ``norm="instance"`` with ``image_size <= 32``: the last stage is then 1 x 1 and instance
        norm has no spatial statistics to train on.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, image_size: int = 224,
                 norm: str = "batch") -> None:
        from torchvision.models import resnet18

        if norm not in ("batch", "instance", "none"):
            raise ValueError(f"unknown norm {norm!r}; choose from 'batch', 'instance', 'none'")
        if norm == "instance" and image_size <= 32:
            raise ValueError(f"norm='instance' needs image_size > 32 (the last stage of {image_size} x "
                             f"{image_size} images is 1 x 1); use norm='batch' or 'none'")

        rgb = in_channels == 3
        super().__init__(in_channels, image_size, num_classes, 512, IMAGENET_MEAN if rgb else [0.5] * in_channels,
                         IMAGENET_STD if rgb else [0.25] * in_channels)
        net = resnet18(weights=None, num_classes=num_classes)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        if norm != "batch":
            _replace_batchnorm(net, norm)
        self.net = net
        self.head = net.fc

    def _feature_maps(self, h: Tensor) -> list[Tensor]:
        n = self.net
        maps = [n.maxpool(n.relu(n.bn1(n.conv1(h))))]
        for layer in (n.layer1, n.layer2, n.layer3, n.layer4):
            maps.append(layer(maps[-1]))
        return maps


class TorchvisionDenseNet121(Classifier):
    """Adapter of ``torchvision.models.densenet121`` (Section 3.1): z = the 1024-d pooled features."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, image_size: int = 224) -> None:
        from torchvision.models import densenet121

        super().__init__(in_channels, image_size, num_classes, 1024, IMAGENET_MEAN, IMAGENET_STD)
        self.net = densenet121(weights=None, num_classes=num_classes)
        self.head = self.net.classifier

    def _feature_maps(self, h: Tensor) -> list[Tensor]:
        maps, features = [], self.net.features
        for name, module in features.named_children():
            h = module(h)
            if name.startswith("denseblock") or name == "norm5":
                maps.append(h)
        maps[-1] = torch.relu(maps[-1])
        return maps


def _replace_batchnorm(module: nn.Module, norm: str) -> None:
    """Swap every BatchNorm2d for an affine InstanceNorm2d (``norm="instance"``) or an identity (``"none"``)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.InstanceNorm2d(child.num_features, affine=True) if norm == "instance"
                    else nn.Identity())
        else:
            _replace_batchnorm(child, norm)


def build_model(arch: str, *, in_channels: int, image_size: int, num_classes: int, **options) -> Classifier:
    """Construct an untrained classifier by architecture name (one of ``ARCHS``)."""
    if arch == "small_cnn":
        return SmallCNN(in_channels, image_size, num_classes, **options)
    if arch == "small_resnet":
        return SmallResNet(in_channels, image_size, num_classes, **options)
    if arch == "mlp":
        return MLP(in_channels, image_size, num_classes, **options)
    if arch == "resnet18":
        return TorchvisionResNet18(num_classes, in_channels, image_size, **options)
    if arch == "densenet121":
        return TorchvisionDenseNet121(num_classes, in_channels, image_size, **options)
    raise ValueError(f"unknown architecture {arch!r}; valid choices: {', '.join(ARCHS)}")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or any device string
    torch knows) → that device.

    Raises
    ------
    ValueError
        If ``device`` is not a device torch knows (e.g. ``"tpu"``), or is a CUDA device on a machine without
        CUDA; the message lists the valid choices.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {device!r}; valid choices: auto, cpu, cuda, cuda:N") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this machine has no CUDA device; use 'auto' or 'cpu'")
    return resolved
