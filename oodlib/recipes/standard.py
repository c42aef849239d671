"""The plain classifier's recipes: cross-entropy training (``"standard"``) and torchvision's ImageNet weights
(``"pretrained"``, Section 3.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import ImageSet, pretrained_weights_path
from ..training import ModelSpec, fit, register_recipe


@register_recipe("standard")
def train_standard(model: nn.Module, train: ImageSet, spec: ModelSpec, device: torch.device) -> dict:
    """Cross-entropy with Adam (lr ``spec.option('lr', 3e-3)``), batch ``spec.option('batch_size', 64)``,
    ``spec.epochs`` epochs, cosine learning-rate decay; the batch order is seeded by ``spec.seed``."""
    x_all, y_all = train.x.to(device), train.y.to(device)

    def step_loss(step: int, idx: Tensor) -> Tensor:
        return F.cross_entropy(model(x_all[idx.to(device)]), y_all[idx.to(device)])

    return fit(model, step_loss, n_examples=len(train), epochs=spec.epochs, batch_size=spec.option("batch_size", 64),
               lr=spec.option("lr", 3e-3), generator=torch.Generator().manual_seed(spec.seed))


@register_recipe("pretrained")
def load_pretrained(model: nn.Module, train: ImageSet, spec: ModelSpec, device: torch.device) -> dict:
    """No training: load torchvision ImageNet weights fetched by ``data_scripts/fetch_weights.py``
    (Section 3.1 uses the PyTorch-pretrained ResNet-18 and DenseNet-121)."""
    state = torch.load(pretrained_weights_path(spec.arch), map_location="cpu", weights_only=True)
    model.net.load_state_dict(state)
    return {"weights": str(pretrained_weights_path(spec.arch))}
