"""The energy score (Liu, Wang, Owens & Li, NeurIPS 2020) — a modern reference beside ODIN (Appendix C).

Not one of the detectors the attack paper tested: it is the cheap post-hoc baseline most later work compares
with, so the ODIN chapter sets it beside Table 2. Like ODIN it is a function of the logits alone, so matching the
logits (the attack of Appendix C.2 at PM = 0) matches it too.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import _checks
from .base import ClassifierDetector, register_detector


@register_detector
class Energy(ClassifierDetector):
    """Energy score — Liu, Wang, Owens & Li (NeurIPS 2020), *Energy-based Out-of-distribution Detection*.

    The free energy of the logits is ``E(x; T) = −T · logsumexp(f(x) / T)`` (their Eq. 5), lower for
    in-distribution inputs; the in-score is the negative energy ``T · logsumexp(f(x) / T)``.

    Parameters
    ----------
    model : the classifier ``f`` (logits).
    temperature : T > 0 (the paper uses 1).
    """

    name = "energy"
    paper = "Liu, Wang, Owens & Li, NeurIPS 2020"

    def __init__(self, model: nn.Module, temperature: float = 1.0) -> None:
        super().__init__(model)
        self.temperature = float(_checks.number(temperature, "temperature", positive=True))

    def score(self, x: Tensor) -> Tensor:
        return self.temperature * torch.logsumexp(self.model(x) / self.temperature, dim=1)
