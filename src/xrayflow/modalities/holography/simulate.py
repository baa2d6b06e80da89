"""Near-field (Fresnel) holography: ``holography``.

The illumination (plane wave, or a Gaussian beam of waist ``probe.gaussian.waist``) passes
through the sample (multislice over ``multislice.n_slices`` slabs, the projection for one
slab) and is propagated with the Fresnel transfer function to each detector distance
(one frame per entry of ``holography.distances``).

Cone beam (``geometry.source_distance = z1``): by the Fresnel scaling theorem a point
source at ``z1`` upstream of the sample and a detector at ``z2`` behind it is equivalent
to a plane wave propagated over the effective distance ``z_eff = z1·z2/(z1 + z2)`` and
magnified by ``M = (z1 + z2)/z1``. Frames are stored **magnification-corrected**: on the
object grid of pixel ``Δx = p/M₁`` (``M₁`` for the first distance; plane wave: ``Δx = p``),
each frame ``j`` computed with ``z_eff,j``. ``attrs`` lists distances, effective distances
and magnifications. Frames are real-space images (``centred = False``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from xrayflow.errors import PhysicsError
from xrayflow.geometry import Geometry
from xrayflow.io.cxi import DiffractionData
from xrayflow.modalities import simulation as C
from xrayflow.operators import Propagation, exit_waves
from xrayflow.optics.gaussian import gaussian_beam
from xrayflow.optics.propagation import check_propagation_sampling, transfer_function


def holography_geometry(cfg: dict) -> Geometry:
    """The near-field geometry: distances ``holography.distances``, source distance
    ``geometry.source_distance`` (None: plane wave), object pixel ``p/M₁``."""
    return C.detector_geometry(cfg, cfg["holography"]["distances"], C.source_distance(cfg))


def holography(config: dict, rng, backend) -> DiffractionData:
    """Fresnel holograms at one or several distances (plane-wave or point-source geometry)."""
    cfg = config
    s = C.rng_streams(rng, ("phantom", "probe", "scan", "noise"))
    C.check_phantom_config(cfg)
    geo = holography_geometry(cfg)
    zeff = geo.effective_distances
    relation = (
        "the detector pixel (plane-wave holography)"
        if C.source_distance(cfg) is None
        else "detector pixel / magnification (z1 + z2)/z1 of the first distance"
    )
    voxel = C.check_voxel_size(cfg, geo.object_pixel, relation)
    geo = dataclasses.replace(geo, object_pixel=(voxel, voxel))
    n = geo.shape
    lam = geo.wavelength
    for j, z in enumerate(zeff):
        try:
            check_propagation_sampling(n, voxel, lam, float(z))
        except PhysicsError as exc:
            raise C.kerr(f"holography.distances[{j}]", str(exc)) from None
    # illumination
    if cfg["holography"]["illumination"] == "gaussian":
        w = cfg["probe"]["gaussian"]
        illum = gaussian_beam(n, voxel, lam, w["waist"], z=w["defocus"])[None]
        C.check_probe_fits(illum, "probe.gaussian.waist", voxel)
    else:
        illum = np.ones((1, *n), dtype=np.complex128)
    illum = np.asarray(C.scale_modes(cfg, np.asarray(illum, dtype=np.complex128), voxel))
    # sample
    sh = cfg["phantom"]["shape"]
    shape = (int(sh[0] or 16), int(sh[1] or n[0]), int(sh[2] or n[1]))
    if shape[1:] != n:
        raise C.kerr(
            "phantom.shape",
            f"holography needs the phantom's lateral size to equal the detector grid {n}, "
            f"got {shape[1:]} (use null to derive it)",
        )
    phantom = C.make_phantom(cfg, shape, voxel, s["phantom"])
    delta, beta = phantom.delta_beta(cfg["energy_ev"])
    n_sl = C.n_slices_for(cfg, shape[0], voxel)
    d_s, b_s, th = C.slabs(delta, beta, n_sl, voxel)
    key = "multislice.n_slices" if n_sl > 1 else "phantom.shape"
    C.check_slices(cfg, th, voxel, lam, n[0], key=key)
    trans = C.transmission(d_s, b_s, th, lam, backend)
    xp = backend.xp
    transfer = None
    if n_sl > 1:
        transfer = xp.stack(
            [
                transfer_function(
                    cfg["multislice"]["propagator"],
                    n,
                    voxel,
                    lam,
                    float(t),
                    xp=xp,
                    dtype=backend.complex_dtype,
                )
                for t in th[:-1]
            ]
        )
    psi = exit_waves(
        backend.asarray(illum.astype(backend.complex_dtype)), trans[:, None], transfer, backend
    )[0]  # (M, ny, nx)
    expected = np.empty((len(zeff), *n), dtype=np.float64)
    for j, z in enumerate(zeff):
        H = transfer_function(
            "fresnel", n, voxel, lam, float(z), xp=xp, dtype=backend.complex_dtype
        )
        u = Propagation(H, backend.workers).fwd(psi)
        expected[j] = backend.to_numpy((xp.abs(u) ** 2).sum(axis=0))
    detector = C.make_detector(cfg, geo, centred=True)
    data = C.detect(cfg, detector, expected, s["noise"])
    truth = {
        "object": backend.to_numpy(trans).prod(axis=0) if n_sl > 1 else backend.to_numpy(trans)[0],
        "exit_wave": backend.to_numpy(psi).astype(np.complex64),
        "probe": illum.astype(np.complex64),
        **C.slab_truth(phantom, voxel, th, d_s, b_s),
    }
    attrs = {
        "modality": "holography",
        "space": "real",
        "illumination": cfg["holography"]["illumination"],
        "photons": C.photon_scaling(cfg)[1],
        "photon_scaling": C.photon_scaling(cfg)[0],
        "poisson": bool(cfg["noise"]["poisson"]),
        "n_slices": n_sl,
        "note": "frames are magnification-corrected images on the object grid",
    }
    return C.package(cfg, geo, detector, data, truth, attrs, centred=False)


def memory_parts(cfg: dict, streaming: bool = True) -> dict[str, float]:
    """Estimated large allocations (description -> bytes) of simulating ``cfg`` (all frames
    are held in memory: one per distance)."""
    c = 16 if cfg["precision"] == "double" else 8  # complex itemsize
    modes = int(cfg["probe"]["modes"])
    n = tuple(int(s) for s in C.pair(cfg["geometry"]["shape"]))
    nz = int(cfg["phantom"]["shape"][0] or 16)
    n_dist = len(cfg["holography"]["distances"])
    n_slices = min(nz, int(cfg["multislice"]["n_slices"]))
    return {
        f"phantom ({nz}, {n[0]}, {n[1]})": C.phantom_bytes(cfg, (nz, *n)),
        f"{n_slices} slices": C.nbytes(n_slices, *n, itemsize=24 + 3 * c),
        "illumination and exit waves": C.nbytes(modes, *n, itemsize=32 + 4 * c),
        f"{n_dist} frames (propagation, detector)": C.nbytes(n_dist, *n, itemsize=72 + 2 * c),
    }


def check_config(cfg: dict) -> None:
    """Near-field distances in physical ranges (ConfigError naming the key, with a unit-slip
    hint; the source distance is checked with the geometry)."""
    for j, z in enumerate(cfg["holography"]["distances"]):
        C.check_length(
            f"holography.distances[{j}]", z, *C.NEAR_DISTANCE_RANGE_M, "near-field distances"
        )
