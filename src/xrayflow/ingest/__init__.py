"""The ingest stage: detector and beamline files → the CXI layout of docs/data-format.md.

    xrayflow ingest --config config/ingest/eiger.yaml --out data/scan.cxi

Modules: :mod:`~xrayflow.ingest.master` (master files, external links, NeXus geometry and
masks), :mod:`~xrayflow.ingest.positions` (HDF5 or text positions),
:mod:`~xrayflow.ingest.corrections` (dark, gain, flat, centre, crop, binning on NumPy
blocks), :mod:`~xrayflow.ingest.pipeline` (the Dask pipeline and the streamed CXI writer,
:func:`~xrayflow.ingest.pipeline.ingest`), :mod:`~xrayflow.ingest.cli`.
"""
