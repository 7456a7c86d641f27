"""mmdet 3.x components of oidseg, registered on import.

Loaded by every model config through
``custom_imports = dict(imports=['oidseg.mmdet_ext'], allow_failed_imports=False)``.

- :mod:`.backbones`: ``DemoResNet`` / ``DemoResNeXt`` (small Bottleneck depths);
- :mod:`.dataset`: ``OIDSegDataset`` (our annotation pickle);
- :mod:`.transforms`: ``LoadOIDAnnotations`` (lazy mask PNGs), ``RandomCutOut``,
  ``RandomBrightnessContrast``, ``RandomJPEG`` (P1's image-only augmentation);
- :mod:`.sampler`: ``OrderedListSampler`` (re-balanced list, rank split, skip);
- :mod:`.ensemble`: ``OIDEnsembleTTA`` (the original's ensemble test-time augmentation).

The training-only ``JsonLinesLossHook`` lives in :mod:`oidseg.train`.
"""

from oidseg.mmdet_ext import backbones, dataset, ensemble, sampler, transforms  # noqa: F401
from oidseg.mmdet_ext.backbones import DemoResNet, DemoResNeXt
from oidseg.mmdet_ext.dataset import OIDSegDataset
from oidseg.mmdet_ext.ensemble import OIDEnsembleTTA
from oidseg.mmdet_ext.sampler import OrderedListSampler
from oidseg.mmdet_ext.transforms import (
    LoadOIDAnnotations,
    RandomBrightnessContrast,
    RandomCutOut,
    RandomJPEG,
)

__all__ = [
    "DemoResNet",
    "DemoResNeXt",
    "LoadOIDAnnotations",
    "OIDEnsembleTTA",
    "OIDSegDataset",
    "OrderedListSampler",
    "RandomBrightnessContrast",
    "RandomCutOut",
    "RandomJPEG",
]
