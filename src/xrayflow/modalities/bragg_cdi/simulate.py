"""Bragg coherent diffraction imaging: ``bragg_cdi``.

A faceted crystal (``phantom.type: faceted_crystals``; its binary density ρ) carries a
strain phase ``φ = Q·u`` from a smooth random displacement field ``u`` (three components,
Gaussian-filtered white noise of correlation length ``bragg.strain.correlation_length``,
scaled to the rms ``bragg.strain.amplitude`` inside the crystal), with
``Q = 2π/d · q̂`` (``bragg.d_spacing``, ``bragg.q_direction`` in (z, y, x)). The complex
object ``ρ·exp(iφ)`` is zero-padded to the detector grid laterally and to
``oversampling × Z`` along z (the rocking direction) (:func:`.grid.embed`), and the 3D far field
``|FFTₙ(·)|²`` (unitary) is scaled so that it holds the configured photons in total.
Frames are the slices along the rocking axis; the whole volume is stored centred
(``fftshift`` over all three axes, ``attrs["fft_ndim"] = 3``).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from xrayflow.backend import fftshift, ifftshift
from xrayflow.io.cxi import DiffractionData
from xrayflow.modalities import simulation as C
from xrayflow.modalities.bragg_cdi.grid import embed


def strain_phase(support, voxel, cfg, rng):
    """Displacement field (3, Z, Y, X) m and phase Q·u (rad) for the bragg section."""

    st = cfg["bragg"]["strain"]
    amp = float(st["amplitude"])
    shape = support.shape
    u = np.zeros((3, *shape))
    if amp > 0:
        sigma = max(float(st["correlation_length"]) / voxel, 0.5)
        for c in range(3):
            u[c] = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
        inside = support if support.any() else np.ones(shape, bool)
        rms = np.sqrt((u[:, inside] ** 2).sum(axis=0).mean())
        u *= amp / max(rms, 1e-300)
    q = np.asarray(cfg["bragg"]["q_direction"], dtype=np.float64)
    norm = np.linalg.norm(q)
    if norm == 0:
        raise C.kerr("bragg.q_direction", "must not be the zero vector")
    qvec = 2 * np.pi / float(cfg["bragg"]["d_spacing"]) * q / norm
    phase = np.tensordot(qvec, u, axes=1) * support
    return u, phase, qvec


def bragg_cdi(config: dict, rng, backend) -> DiffractionData:
    """3D far field of a faceted crystal with an optional strain phase, Poisson noise."""
    cfg = config
    s = C.rng_streams(rng, ("phantom", "strain", "noise"))
    C.check_phantom_config(cfg)
    geo = C.far_field_geometry(cfg)
    voxel = C.check_voxel_size(
        cfg, geo.object_pixel, "the far-field relation lambda*z/(N*p) of the detector geometry"
    )
    os_ = int(cfg["bragg"]["oversampling"])
    ny, nx = geo.shape
    sh = cfg["phantom"]["shape"]
    shape = (
        int(sh[0]) if sh[0] is not None else min(ny, nx) // os_,
        int(sh[1]) if sh[1] is not None else ny // os_,
        int(sh[2]) if sh[2] is not None else nx // os_,
    )
    if min(shape) < 1:
        raise C.kerr("bragg.oversampling", f"{os_} leaves no voxels for the crystal")
    if shape[1] > ny or shape[2] > nx:
        raise C.kerr(
            "phantom.shape",
            f"crystal volume {shape[1]}x{shape[2]} is larger than the detector grid {ny}x{nx}",
        )
    if shape[1] * os_ > ny or shape[2] * os_ > nx:
        raise C.kerr(
            "bragg.oversampling",
            f"{os_} x crystal volume {shape[1]}x{shape[2]} does not fit the detector grid "
            f"{ny}x{nx}",
        )
    phantom = C.make_phantom(cfg, shape, voxel, s["phantom"])
    rho = phantom.density()
    support = phantom.support()
    u, phase, qvec = strain_phase(support, voxel, cfg, s["strain"])
    obj = rho * np.exp(1j * phase)
    padded = embed(obj.astype(np.complex128), (shape[0] * os_, ny, nx))
    # object centre at index N//2 -> ifftshift so the FFT phase is flat for a centred object
    xp = backend.xp
    F = backend.fftn(backend.asarray(ifftshift(padded).astype(backend.complex_dtype)), norm="ortho")
    intensity = backend.to_numpy(xp.abs(F) ** 2).astype(np.float64)
    kind, value = C.photon_scaling(cfg)
    if kind == "fluence":
        raise C.kerr(
            "noise.photons_per_m2",
            "bragg_cdi takes noise.photons_per_probe (total photons in the 3D pattern)",
        )
    total = intensity.sum()
    if total <= 0:
        raise C.kerr("phantom", "the crystal is empty (no voxels of material)")
    intensity *= value / total
    expected = fftshift(intensity)
    detector = C.make_detector(cfg, geo, centred=True)
    data = C.detect(cfg, detector, expected, s["noise"])
    b = geo.binning
    truth = {
        "object": obj.astype(np.complex64),
        "support": support,
        "strain_phase": phase.astype(np.float32),
        "displacement": u.astype(np.float32),
        "q_vector": qvec,
        "pixel_size": voxel,
        "voxel_size": voxel,
        "materials": list(phantom.materials),
    }
    attrs = {
        "modality": "bragg_cdi",
        "fft_ndim": 3,
        "oversampling": os_,
        "object_pixel_size": voxel,
        "photons": value,
        "photon_scaling": kind,
        "poisson": bool(cfg["noise"]["poisson"]),
        "binning": b,
        "frame_axis": "q_z (rocking direction); object along z has voxel_size",
    }
    return C.package(cfg, geo, detector, data, truth, attrs, centred=True)


def memory_parts(cfg: dict, streaming: bool = True) -> dict[str, float]:
    """Estimated large allocations (description -> bytes) of simulating ``cfg``."""
    c = 16 if cfg["precision"] == "double" else 8  # complex itemsize
    sh = cfg["phantom"]["shape"]
    ny, nx = (int(s) for s in C.pair(cfg["geometry"]["shape"]))
    os_ = int(cfg["bragg"]["oversampling"])
    nz = int(sh[0]) if sh[0] is not None else min(ny, nx) // os_
    cy = int(sh[1]) if sh[1] is not None else ny // os_
    cx = int(sh[2]) if sh[2] is not None else nx // os_
    return {
        f"crystal ({nz}, {cy}, {cx}) and strain": C.phantom_bytes(cfg, (nz, cy, cx))
        + C.nbytes(nz, cy, cx, itemsize=100),
        f"3D far field ({nz * os_}, {ny}, {nx})": C.nbytes(nz * os_, ny, nx, itemsize=96 + 2 * c),
    }
