"""Near-field (Fresnel) ptychography: ``nearfield_ptycho``.

A structured beam (typically ``probe.kind: diffuser``, a sandpaper-like diffuser in a
focused beam) illuminates the sample, which is scanned across it; each frame is the in-line
hologram of the exit wave on the detector, a real-space image (not FFT-shifted).

Cone beam (focus ``geometry.source_distance`` = z1 upstream of the sample, detector at
``geometry.distance`` = z2 behind it): by the Fresnel scaling theorem the frames equal a
plane-wave experiment with magnification ``M = (z1 + z2)/z1``, object pixel ``p/M`` and
propagation distance ``z_eff = z1·z2/(z1 + z2)``. Frames are computed and stored
magnification-corrected, on the object-plane pixel (as :mod:`holography
<xrayflow.modalities.holography.simulate>`); the file records z1, z2, ``z_eff`` and ``M``.
Plane wave (z1 null): ``M = 1``, ``z_eff = z2``. Scan positions are in the sample plane (m).

Pipeline: probe modes on the detector window at the object pixel, scan positions ->
window corners on an object grid holding the scan (+ the window), δ/β phantom -> slabs ->
transmissions, then :class:`~xrayflow.operators.MultisliceModel` with the detector
propagation over ``z_eff`` (the same transfer function the reconstruction uses:
:mod:`.model`), the detector (Poisson, binning), frames streamed to the file.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from xrayflow.errors import PhysicsError
from xrayflow.geometry import Geometry
from xrayflow.io.cxi import DiffractionData
from xrayflow.modalities import simulation as C
from xrayflow.modalities.ptycho2d.simulate import STREAMS, frame_shape, slices_key
from xrayflow.modalities.ptycho2d.simulate import memory_parts as far_field_parts
from xrayflow.operators import MultisliceModel
from xrayflow.optics.propagation import check_propagation_sampling


def nearfield_geometry(cfg: dict) -> Geometry:
    """Detector at ``geometry.distance`` (z2), cone-beam source ``geometry.source_distance``
    (None: plane wave); object pixel ``p/M``."""
    return C.detector_geometry(cfg, [cfg["geometry"]["distance"]], C.source_distance(cfg))


def _distance_key(cfg: dict) -> str:
    return "geometry.distance" if C.source_distance(cfg) is None else "geometry.source_distance"


def nearfield_ptycho(config: dict, rng, backend) -> DiffractionData:
    """Near-field ptychography frames (plane-wave or cone-beam geometry)."""
    cfg = config
    s = C.rng_streams(rng, STREAMS)
    C.check_phantom_config(cfg)
    geo = nearfield_geometry(cfg)
    voxel = C.check_voxel_size(
        cfg, geo.object_pixel, "detector pixel / magnification (z1 + z2)/z1 (Fresnel scaling)"
    )
    geo = dataclasses.replace(geo, object_pixel=(voxel, voxel))
    C.photon_scaling(cfg)  # validates the noise section early
    lam, z_eff, n = geo.wavelength, geo.effective_distances[0], geo.shape
    try:
        check_propagation_sampling(n, voxel, lam, z_eff)
    except PhysicsError as exc:
        raise C.kerr(_distance_key(cfg), f"effective distance {z_eff:.4g} m: {exc}") from None
    probe = C.make_probe(cfg, n, voxel, lam, s["probe"], fits=False)  # may fill the frame
    positions = C.make_scan(cfg, s["scan"])
    ny, nx = C.lateral_shape(cfg, positions, voxel, n)
    nz = int(cfg["phantom"]["shape"][0] or 16)
    corners = C.check_scan_fits(positions, voxel, (ny, nx), n)
    phantom = C.make_phantom(cfg, (nz, ny, nx), voxel, s["phantom"])
    delta, beta = phantom.delta_beta(cfg["energy_ev"])
    n_sl = C.n_slices_for(cfg, nz, voxel)
    d_s, b_s, th = C.slabs(delta, beta, n_sl, voxel)
    C.check_slices(cfg, th, voxel, lam, n[0], key=slices_key(cfg) if n_sl > 1 else "phantom.shape")
    trans = C.transmission(d_s, b_s, th, lam, backend)
    try:
        model = MultisliceModel(
            trans,
            backend.asarray(probe.astype(backend.complex_dtype)),
            th[:-1] if n_sl > 1 else 0.0,
            lam,
            voxel,
            backend,
            propagator=cfg["multislice"]["propagator"],
            detector_distance=z_eff,
        )
    except PhysicsError as exc:
        raise C.kerr("multislice", str(exc)) from None
    detector = C.make_detector(cfg, geo, centred=True)
    out = C.frame_buffer(cfg, len(corners), frame_shape(cfg, geo))
    C.batched_intensities(cfg, model, corners, detector, s["noise"], out)
    trans_np = backend.to_numpy(trans)
    truth = {
        "object": trans_np.prod(axis=0) if n_sl > 1 else trans_np[0],
        "probe": probe.astype(np.complex64),
        "positions": positions,
        "corners_px": corners,
        **C.slab_truth(phantom, voxel, th, d_s, b_s),
    }
    attrs = {
        "modality": "nearfield_ptycho",
        "space": "real",
        "photons": C.photon_scaling(cfg)[1],
        "photon_scaling": C.photon_scaling(cfg)[0],
        "poisson": bool(cfg["noise"]["poisson"]),
        "n_slices": n_sl,
        "propagator": cfg["multislice"]["propagator"],
        "note": "frames are magnification-corrected real-space images on the object pixel",
    }
    return C.package(cfg, geo, detector, out, truth, attrs, centred=False, positions=positions)


def memory_parts(cfg: dict, streaming: bool = True) -> dict[str, float]:
    """Estimated large allocations (description -> bytes) of simulating ``cfg``: those of
    far-field 2D/multislice ptychography on the same windows, scan and object grid."""
    return far_field_parts(cfg, streaming, geometry=nearfield_geometry)
