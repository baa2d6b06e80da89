"""Far-field ptychography simulation: ``ptycho2d`` (one slice) and ``multislice_ptycho``
(the pipeline below; ``ptychotomo`` repeats it at every rotation angle).

Pipeline (all physics from :mod:`xrayflow.optics`, :mod:`xrayflow.illumination`,
:mod:`xrayflow.scans`, :mod:`xrayflow.phantoms`, :mod:`xrayflow.detector`):

1. object pixel ``Δx = λz/(N p)`` from the detector; phantom voxels are ``Δx`` cubes;
2. probe modes on the ``N × N`` window, scaled to the configured photons;
3. scan positions -> fractional top-left corners on the object grid;
4. δ/β volume -> ``S`` slabs -> transmissions ``exp(−ikΔz(δ − iβ))`` (``S = 1`` for
   ``ptycho2d``: the projection approximation);
5. multislice exit waves -> ``Σ_m |F ψ_m|²`` (unitary FFT: Σ I = Σ|exit wave|²);
6. detector: Poisson, saturation, mask, binning; frames stored centred (``fftshift`` per
   batch). Under ``xrayflow simulate`` (:func:`xrayflow.simulate.run`) each batch goes
   straight into the output file (:func:`common.frame_buffer`), so memory does not grow
   with the number of positions; the frames are bit-identical to the in-memory path.
"""

from __future__ import annotations

import numpy as np

from xrayflow.errors import PhysicsError
from xrayflow.io.cxi import DiffractionData
from xrayflow.modalities import simulation as C
from xrayflow.operators import MultisliceModel

STREAMS = ("phantom", "probe", "scan", "noise")


def setup(cfg, rng, backend, default_nz=None):
    """Random streams, geometry, voxel size, probe modes, scan positions, phantom shape (Z, Y,
    X) and window corners of a far-field ptychography config (checked)."""
    s = C.rng_streams(rng, STREAMS)
    C.check_phantom_config(cfg)
    geo = C.far_field_geometry(cfg)
    voxel = C.check_voxel_size(
        cfg, geo.object_pixel, "the far-field relation lambda*z/(N*p) of the detector geometry"
    )
    C.photon_scaling(cfg)  # validates the noise section early
    probe = C.make_probe(cfg, geo.shape, voxel, geo.wavelength, s["probe"])
    C.check_far_field(cfg, geo, probe, C.probe_size_key(cfg))
    positions = C.make_scan(cfg, s["scan"])
    ny, nx = C.lateral_shape(cfg, positions, voxel, geo.shape)
    nz = cfg["phantom"]["shape"][0]
    if nz is None:
        nz = default_nz(ny, nx) if default_nz else 16
    corners = C.check_scan_fits(positions, voxel, (ny, nx), geo.shape)
    return s, geo, voxel, probe, positions, (int(nz), ny, nx), corners


def multislice_model(cfg, trans, probe, spacing, geo, voxel, backend, n_window):
    """The simulation's multislice forward model of the slab transmissions ``trans``."""
    try:
        return MultisliceModel(
            trans,
            backend.asarray(probe.astype(backend.complex_dtype)),
            spacing if len(spacing) else 0.0,
            geo.wavelength,
            voxel,
            backend,
            propagator=cfg["multislice"]["propagator"],
        )
    except PhysicsError as exc:
        raise C.kerr("multislice", str(exc)) from None


def frame_shape(cfg, geo) -> tuple[int, int]:
    """Stored frame shape (detector pixels after binning)."""
    b = geo.binning
    return geo.shape[0] // b, geo.shape[1] // b


def finish(cfg, geo, data, detector, positions, truth, modality, angles=None, extra_attrs=None):
    """Package the frames (already centred by ``batched_intensities``, possibly streamed)."""
    attrs = {
        "modality": modality,
        "object_pixel_size": float(truth["pixel_size"]),
        "photons": C.photon_scaling(cfg)[1],
        "photon_scaling": C.photon_scaling(cfg)[0],
        "poisson": bool(cfg["noise"]["poisson"]),
        "binning": geo.binning,
    }
    attrs.update(extra_attrs or {})
    return C.package(
        cfg, geo, detector, data, truth, attrs, centred=True, positions=positions, angles=angles
    )


def slices_key(cfg) -> str:
    """Config key that sets the number of slices (named in slice-check errors)."""
    if cfg["multislice"]["slice_thickness"] is not None:
        return "multislice.slice_thickness"
    return "multislice.n_slices"


def _run_slices(cfg, rng, backend, modality, force_single):
    s, geo, voxel, probe, positions, shape, corners = setup(cfg, rng, backend)
    phantom = C.make_phantom(cfg, shape, voxel, s["phantom"])
    delta, beta = phantom.delta_beta(cfg["energy_ev"])
    nz = shape[0]
    if force_single:
        n_sl = 1
        key = "phantom.shape"
    else:
        n_sl = C.n_slices_for(cfg, nz, voxel)
        key = slices_key(cfg)
    d_s, b_s, th = C.slabs(delta, beta, n_sl, voxel)
    hint = "use modality multislice_ptycho or a thinner phantom" if force_single else None
    C.check_slices(cfg, th, voxel, geo.wavelength, geo.shape[0], key=key, hint=hint)
    trans = C.transmission(d_s, b_s, th, geo.wavelength, backend)
    model = multislice_model(cfg, trans, probe, th[:-1], geo, voxel, backend, geo.shape[0])
    detector = C.make_detector(cfg, geo)
    out = C.frame_buffer(cfg, len(corners), frame_shape(cfg, geo))
    C.batched_intensities(cfg, model, corners, detector, s["noise"], out, centre=True)
    trans_np = backend.to_numpy(trans)
    truth = {
        "object": trans_np[0] if n_sl == 1 else trans_np,
        "probe": probe.astype(np.complex64),
        "positions": positions,
        "corners_px": corners,
        **C.slab_truth(phantom, voxel, th, d_s, b_s),
    }
    return finish(
        cfg,
        geo,
        out,
        detector,
        positions,
        truth,
        modality,
        extra_attrs={"n_slices": n_sl, "propagator": cfg["multislice"]["propagator"]},
    )


def ptycho2d(config: dict, rng, backend) -> DiffractionData:
    """Single-slice (projection approximation) far-field ptychography."""
    return _run_slices(config, rng, backend, "ptycho2d", force_single=True)


def multislice_ptycho(config: dict, rng, backend) -> DiffractionData:
    """Multislice far-field ptychography (thick sample cut into slabs along the beam)."""
    return _run_slices(config, rng, backend, "multislice_ptycho", force_single=False)


def memory_parts(
    cfg: dict,
    streaming: bool = True,
    single_slice: bool = False,
    rotation: bool = False,
    geometry=C.far_field_geometry,
) -> dict[str, float]:
    """Estimated large allocations (description -> bytes) of simulating ``cfg``, from the
    config alone (shapes, scan size, batch, precision), before anything is allocated;
    ``single_slice``: 2D ptychography; ``rotation``: repeated at every rotation angle;
    ``geometry``: ``cfg`` -> :class:`~xrayflow.geometry.Geometry` with the object pixel
    (near-field ptychography passes its own).

    ``streaming``: frames go to the output file batch by batch (``xrayflow simulate``),
    otherwise they are held in memory. The factors were measured with ``tracemalloc`` on the
    example configs (the estimate is 1-2x the measured peak).
    """
    c = 16 if cfg["precision"] == "double" else 8  # complex itemsize
    modes = int(cfg["probe"]["modes"])
    sh = cfg["phantom"]["shape"]
    geo = geometry(cfg)
    n = geo.shape
    b = geo.binning
    rng = C.rng_streams(np.random.default_rng(int(cfg["seed"])), ("phantom", "probe", "scan"))
    positions = C.make_scan(cfg, rng["scan"])
    ny, nx = C.lateral_shape(cfg, positions, float(geo.object_pixel[1]), n)
    nz = int(sh[0]) if sh[0] is not None else (nx if rotation else 16)
    n_slices = 1 if single_slice else min(nz, int(cfg["multislice"]["n_slices"]))
    n_pos = len(positions)
    n_frames = n_pos * (int(cfg["scan"]["rotation"]["n_angles"]) if rotation else 1)
    batch = min(int(cfg["batch_size"]), n_pos)
    parts = {
        f"phantom ({nz}, {ny}, {nx})": C.phantom_bytes(cfg, (nz, ny, nx)),
        f"{n_slices} slices (delta, beta, transmission, truth)": C.nbytes(
            n_slices, ny, nx, itemsize=24 + 2 * c
        ),
        f"probe {modes} modes": C.nbytes(modes, *n, itemsize=16 * 4 + 2 * c),
        f"{n_frames} positions": C.nbytes(n_frames, itemsize=80),
        f"batch of {batch} frames (wavefields, detector)": C.nbytes(batch, *n, itemsize=64 + 2 * c),
    }
    if rotation:
        parts["rotated volumes"] = C.nbytes(nz, ny, nx, itemsize=40)
    if not streaming:
        parts[f"{n_frames} frames held in memory"] = C.nbytes(
            n_frames, n[0] // b, n[1] // b, itemsize=6
        )
    return parts
