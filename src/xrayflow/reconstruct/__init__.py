"""Reconstruct stage: inversion of a modality's forward model (gradient or phase-retrieval
solver, :mod:`xrayflow.solvers`).

``reconstruct(cfg, data_path, out_path, resume=False)`` (in :mod:`.run`) is the entry point;
:mod:`.cli` wires it to ``xrayflow reconstruct``.
"""
