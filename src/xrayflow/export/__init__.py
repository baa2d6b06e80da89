"""``xrayflow export``: reconstruction results in the file formats of other codes.

One module per target format, each with the layout it writes (datasets, units, axis order)
and the version of the target's layout it follows:

* :mod:`.ptychodus` — the ptychodus product file (HDF5), which ptychodus opens and runs
  pty-chi on: object layers, probe modes, scan positions (m), pixel sizes, energy, distance.
* :mod:`.ptypy` — PtyPy's ``.ptyr`` reconstruction file (object and probe storages with
  pixel size and centre, positions).
* :mod:`.cohere` — cohere's phasing-results folder (``image.npy``, ``support.npy``, errors).
* :mod:`.vtk` — VTK images (``.vti``) of 3D volumes.

Which formats a result can be exported in is the business of its modality
(:attr:`xrayflow.modalities.Modality.exports`); :func:`export` looks the modality up from the
result's ``model`` attribute and never tests its name. :mod:`.result` opens the result.
"""

from xrayflow.export.run import export, formats_for

__all__ = ["export", "formats_for"]
