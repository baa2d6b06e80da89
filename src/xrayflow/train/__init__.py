"""Training stage: simulated training sets (HDF5 shards), networks, data-parallel training,
inference. Submodules: shards, generate, networks, loop, distributed, infer, cli.

Imports are lazy so that ``import xrayflow.train`` does not import torch.
"""

__all__ = ["distributed", "generate", "infer", "loop", "networks", "shards"]
