"""Session fixtures: the smoke-profile book, executed once and built once per test session; toy data and toy
models shared by the unit tests (the contract suite, tests/test_contract.py)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from oodlib import runner


@pytest.fixture(scope="session")
def smoke_book():
    """Execute every stale chapter with the smoke profile (two jobs); outcomes by chapter name."""
    outcomes = runner.execute_book("smoke", jobs=2, log=lambda message: print(message, flush=True))
    return {o.notebook: o for o in outcomes}


@pytest.fixture(scope="session")
def smoke_html(smoke_book):
    """The smoke book built from the executed chapters with warnings as errors; the HTML folder."""
    failed = [o.notebook for o in smoke_book.values() if o.status == "failed"]
    assert not failed, f"chapters failed: {failed}"
    stage = runner.stage_book("smoke", list(smoke_book.values()))
    return runner.build_html("smoke", stage, strict=True)


# ------------------------------------------------------------------------------------------ toy models and data
# Shared by the contract suite (tests/test_contract.py) and any test that needs a small trained model: 8×8 grey
# images, three in-distribution classes (a bright blob in a class-specific corner) and out-of-distribution images
# (vertical stripes, all-white), a SmallCNN trained on them for 40 steps, a Glow flow initialised on the
# in-distribution images and an untrained auto-encoder (both already rank the toy OOD images below the ID ones).
# Everything is seeded and built once per session.

TOY_SIZE, TOY_CLASSES = 8, 3
_TOY_CENTRES = ((2.0, 2.0), (2.0, 5.0), (5.0, 3.5))


def toy_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` in-distribution images (n, 1, 8, 8) in [0, 1] and their labels (n,): a Gaussian blob at the class's
    centre (±0.5 pixel) on a dark, slightly noisy background."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % TOY_CLASSES
    centre = torch.tensor(_TOY_CENTRES)[y] + torch.rand(n, 2, generator=g) - 0.5
    rows, cols = torch.meshgrid(torch.arange(TOY_SIZE), torch.arange(TOY_SIZE), indexing="ij")
    dist2 = (rows - centre[:, 0, None, None]) ** 2 + (cols - centre[:, 1, None, None]) ** 2
    x = torch.exp(-dist2 / 2) * 0.9 + 0.05 * torch.rand(n, TOY_SIZE, TOY_SIZE, generator=g)
    return x.unsqueeze(1).clamp(0, 1), y


def toy_ood(n: int) -> torch.Tensor:
    """``n`` out-of-distribution images (n, 1, 8, 8): vertical stripes and all-white images, alternately."""
    stripes = (torch.arange(TOY_SIZE) % 2).float().expand(TOY_SIZE, TOY_SIZE)
    return torch.stack([stripes if i % 2 == 0 else torch.ones(TOY_SIZE, TOY_SIZE) for i in range(n)]).unsqueeze(1)


def _train(model: nn.Module, loss_fn, steps: int, lr: float = 0.01) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def toy_data() -> dict[str, torch.Tensor]:
    """Training images and labels (48), held-out in-distribution images (12) and OOD images (12)."""
    x_train, y_train = toy_images(48, 0)
    x_id, _ = toy_images(12, 1)
    return {"x_train": x_train, "y_train": y_train, "x_id": x_id, "x_ood": toy_ood(12)}


@pytest.fixture(scope="session")
def toy_classifier_factory(toy_data):
    """``make(num_classes=3, seed=0)``: a SmallCNN (width 4, latent 8, batch norm) trained for 40 Adam steps on the
    toy classes with cross-entropy plus a uniform-posterior term on the toy OOD images (Outlier Exposure's), in eval
    mode."""
    from oodlib.models import SmallCNN

    x, y, x_out = toy_data["x_train"], toy_data["y_train"], toy_ood(16)

    def make(num_classes: int = TOY_CLASSES, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        model = SmallCNN(in_channels=1, image_size=TOY_SIZE, num_classes=num_classes, width=4, latent_dim=8)

        def loss(m: nn.Module) -> torch.Tensor:
            logits_out = m(x_out)
            return F.cross_entropy(m(x), y) + 0.5 * (logits_out.logsumexp(1) - logits_out.mean(1)).mean()

        return _train(model, loss, steps=40)

    return make


@pytest.fixture(scope="session")
def toy_flow(toy_data) -> nn.Module:
    """A small Glow (2 levels, depth 2), its actnorm layers initialised on the toy in-distribution images."""
    from oodlib.flows import Glow

    torch.manual_seed(0)
    flow = Glow(1, TOY_SIZE, levels=2, depth=2, hidden=8)
    return flow.initialise(toy_data["x_train"], torch.Generator().manual_seed(1)).eval()


@pytest.fixture(scope="session")
def toy_autoencoder() -> nn.Module:
    """A seeded, untrained ConvAutoEncoder (latent 4), in eval mode."""
    from oodlib.autoencoder import ConvAutoEncoder

    torch.manual_seed(0)
    return ConvAutoEncoder(1, TOY_SIZE, latent_dim=4, width=4).eval()
