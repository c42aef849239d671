"""OOD detectors, one module per method, each class citing the paper it implements.

Conventions (``shared/reference/detectors.md``): ``score(x)`` is an **in-score** (higher = more
in-distribution), differentiable in the input, so any detector's score can be the attack's target; a method
defined with an OOD score is negated and says so. ``fit(x, y)`` computes what statistics the method needs from
in-distribution training data and returns ``self``. Detectors are ``nn.Module`` s wrapping a classifier.

Use ``make_detector(name, model, **options)``; ``DETECTORS`` maps names to classes.
"""

from .base import DETECTORS, Detector, make_detector, register_detector
from .glow import GlowNLL, InputComplexity
from .msp import MSP
from .reconstruction import ReconstructionError

__all__ = ["DETECTORS", "Detector", "GlowNLL", "InputComplexity", "MSP", "ReconstructionError", "make_detector", "register_detector"]
