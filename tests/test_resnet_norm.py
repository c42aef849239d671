"""The torchvision ResNet-18 adapter's normalisation options (Appendix B.2 instance norm, Appendix J none)."""

import pytest
import torch
from torch import nn

from oodlib.models import build_model


def _norm_layers(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d))}


def test_norm_none_removes_every_normalisation_and_trains_at_32():
    model = build_model("resnet18", in_channels=3, image_size=32, num_classes=10, norm="none")
    assert _norm_layers(model) == set()
    model.train()
    model(torch.rand(2, 3, 32, 32)).sum().backward()


def test_instance_norm_is_refused_where_the_last_stage_is_one_pixel():
    with pytest.raises(ValueError, match="image_size > 32"):
        build_model("resnet18", in_channels=3, image_size=32, num_classes=10, norm="instance")
    model = build_model("resnet18", in_channels=3, image_size=64, num_classes=10, norm="instance")
    assert _norm_layers(model) == {nn.InstanceNorm2d}
    model.train()
    model(torch.rand(2, 3, 64, 64)).sum().backward()


def test_unknown_norm_is_refused():
    with pytest.raises(ValueError, match="unknown norm"):
        build_model("resnet18", in_channels=3, image_size=64, num_classes=10, norm="group")
