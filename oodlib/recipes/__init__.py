"""The training recipes, one module per recipe or family; importing this package registers every one of them.

This is the one module that imports every recipe module (the model store imports it, so every recipe is known
wherever the store is): the plain classifier (:mod:`.standard`: ``"standard"``, ``"pretrained"``), Outlier Exposure
(:mod:`.outlier_exposure`, Appendix E), deep-ensemble members (:mod:`.ensemble`, Appendix F), confidence-calibrated
classifiers with their GAN (:mod:`.confidence`, Appendix G), JEM with SGLD (:mod:`.jem`, Appendix J), the robust
detectors' ATOM, ALOE and AOE (:mod:`.atom`, :mod:`.aloe`, :mod:`.aoe`), and the trainers of the Glow flow
(:mod:`.flow`, Section 3.2) and the auto-encoder (:mod:`.autoencoder`, Section 2.4). Pieces several recipes share
are in :mod:`.common`; losses in :mod:`oodlib.losses`. A recipe module imports no sibling but :mod:`.common`
(tests/test_layers.py checks it), so the cache key of a model covers all its training code.
"""

from . import standard  # noqa: I001  (first, so the plain recipes lead every list of recipes, as before)
from . import aloe, aoe, atom, autoencoder, common, confidence, ensemble, flow, jem, outlier_exposure

__all__ = ["aloe", "aoe", "atom", "autoencoder", "common", "confidence", "ensemble", "flow", "jem",
           "outlier_exposure", "standard"]
