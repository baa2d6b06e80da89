"""Training stage: simulated training sets (HDF5 shards), data-parallel training, inference.

Submodules: hooks (what a modality's training module provides, and how it is found), shards,
generate, loop, distributed, infer, cli. The networks and model files are in
:mod:`xrayflow.networks`, the modality-specific physics, layouts and losses in the
modalities' training modules.

``import xrayflow.train`` does not import torch (its submodules do).
"""

__all__ = ["distributed", "generate", "hooks", "infer", "loop", "shards"]
