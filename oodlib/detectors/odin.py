"""ODIN: temperature scaling and input preprocessing (Liang, Li & Srikant, ICLR 2018) — attacked in Appendix C.

ODIN sharpens the maximum-softmax baseline in two ways (ODIN paper, Eqs. 1–2):

- temperature scaling, ``S(x; T) = max_c softmax(f(x) / T)_c``;
- input preprocessing, ``x̃ = x − ε · sign(∇ₓ CE(f(x) / T, ŷ))`` with ``ŷ = argmax_c f(x)_c``: a small step that
  raises the (temperature-scaled) confidence, more for in-distribution images than for OOD ones.

The in-score is ``S(x̃; T)``. The attack paper (Appendix C.1) calls ε the perturbation magnitude PM, sweeps
T ∈ {1, 10, 100, 1000} × PM ∈ {0, 0.001, 0.002, 0.004} (Table 2), and attacks ``f(x) = logits of x̃``
(Appendix C.2), i.e. the attack differentiates *through* the preprocessing: the detector's attack target
``"logits"``.

Differentiating through the preprocessing
-----------------------------------------
``sign`` is piecewise constant, so its derivative is zero almost everywhere and ``∂x̃/∂x = I``: the input
gradient of any function of ``x̃`` is the gradient at ``x̃`` itself. A second-order graph
(``create_graph=True``) through the preprocessing gradient therefore adds nothing but cost; this module computes
the sign direction on a detached copy and adds it as a constant, which gives the same gradient exactly
(``tests/test_detectors_a.py`` checks it against the ``create_graph=True`` computation).

Pixel units: the models normalise their input inside (``oodlib.models``), so the step ε is in [0, 1] pixel units,
like the reference code's step divided by the channel standard deviation in normalised-input space. As in the
reference, x̃ is not clamped to [0, 1]. The reference takes ``sign`` as ``2·[g ≥ 0] − 1``; here ``torch.sign``
(a zero gradient entry gives no step), which differs only on exact zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from .base import ClassifierDetector, register_detector


@register_detector
class ODIN(ClassifierDetector):
    """ODIN — Liang, Li & Srikant (ICLR 2018), *Enhancing the Reliability of Out-of-distribution Image Detection
    in Neural Networks*. In-score ``max_c softmax(f(x̃) / T)_c`` with the preprocessed input x̃ (module docstring).

    Parameters
    ----------
    model : the classifier ``f`` (logits); its input normalisation is inside it.
    temperature : T ≥ 1 (the ODIN paper's default 1000).
    magnitude : the preprocessing step ε ≥ 0 in [0, 1] pixel units ("PM" in the attack paper's Table 2;
        the ODIN paper's default 0.0014). ``temperature=1, magnitude=0`` is the MSP baseline (Appendix C.2).
    """

    name = "odin"
    paper = "Liang, Li & Srikant, ICLR 2018"

    def __init__(self, model: nn.Module, temperature: float = 1000.0, magnitude: float = 0.0014) -> None:
        super().__init__(model)
        self.temperature = float(_checks.number(temperature, "temperature", positive=True))
        self.magnitude = float(_checks.number(magnitude, "magnitude", nonnegative=True))

    def step_direction(self, x: Tensor) -> Tensor:
        """``sign(∇ₓ CE(f(x)/T, ŷ))`` (ODIN paper, Eq. 2), computed on a detached copy of ``x``: a constant.

        Works inside ``torch.no_grad()`` too (e.g. :meth:`~oodlib.detectors.base.Detector.score_batched`).
        """
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            logits = self.model(leaf) / self.temperature
            loss = F.cross_entropy(logits, logits.argmax(dim=1), reduction="sum")
            (grad,) = torch.autograd.grad(loss, leaf)
        return grad.sign()

    def preprocess(self, x: Tensor) -> Tensor:
        """x̃ = x − ε · sign(∇ₓ CE(f(x)/T, ŷ)) (not clamped); differentiable in ``x`` with ∂x̃/∂x = I."""
        if self.magnitude == 0:
            return x
        return x - self.magnitude * self.step_direction(x)

    def logits(self, x: Tensor) -> Tensor:
        """``f(x̃)``, the logits of the **preprocessed** input, shape (N, K): the attack target ``"logits"``, the
        ``f(x)`` of Appendix C.2 ("the logits output from the model, given the preprocessed input"); with
        ``magnitude=0`` the classifier's plain logits."""
        return self.model(self.preprocess(x))

    def score(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x) / self.temperature, dim=1).amax(dim=1)
