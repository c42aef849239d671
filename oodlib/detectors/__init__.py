"""OOD detectors, one module per method, each class citing the paper it implements.

Conventions (``shared/reference/detectors.md``): ``score(x)`` is an **in-score** (higher = more
in-distribution), differentiable in the input, so any detector's score can be the attack's target; a method
defined with an OOD score is negated and says so. ``fit(x, y)`` computes what statistics the method needs from
in-distribution training data and returns ``self``. Detectors are ``nn.Module`` s wrapping a classifier.

Use ``make_detector(name, model, **options)``; ``DETECTORS`` maps names to classes. Each detector names its attack
targets (``detector.targets``, ``detector.target(name)``; :mod:`oodlib.detectors.base`). The robust detectors of
the later source papers (ATOM, BAL) live in :mod:`oodlib.defenses` and register themselves when it is imported.
"""

from .base import DETECTORS, ClassifierDetector, Detector, make_detector, register_detector
from .ccu import CCU
from .confidence import ConfidenceCalibrated
from .energy import Energy
from .ensemble import DeepEnsemble
from .glow import GlowNLL, InputComplexity
from .gram import Gram
from .jem import JEMGradNorm, JEMLogPx, JEMMaxProb
from .mahalanobis import Mahalanobis
from .msp import MSP
from .odin import ODIN
from .outlier_exposure import OutlierExposure
from .reconstruction import ReconstructionError

__all__ = ["CCU", "ClassifierDetector", "ConfidenceCalibrated", "DETECTORS", "DeepEnsemble", "Detector", "Energy",
           "GlowNLL", "Gram", "InputComplexity", "JEMGradNorm", "JEMLogPx", "JEMMaxProb", "MSP", "Mahalanobis", "ODIN",
           "OutlierExposure", "ReconstructionError", "make_detector", "register_detector"]
