"""Reconstruct stage: AD-based inversion of ptychography / holography forward models.

``reconstruct(cfg, data_path, out_path, resume=False)`` (in :mod:`.run`) is the entry point;
:mod:`.cli` wires it to ``xrayflow reconstruct``.
"""
