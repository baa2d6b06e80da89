"""Far-field ptychography modalities: ``ptycho2d``, ``multislice_ptycho``, ``ptychotomo``.

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

``ptychotomo`` repeats 4-6 for each rotation angle after rotating the δ and β volumes about
the y axis with ``scipy.ndimage.rotate(vol, degrees(angle), axes=(0, 2), reshape=False,
order=1)`` (``cupyx.scipy.ndimage.rotate`` on the GPU). Frames are ordered angle-major:
frame ``a·P + p`` is position ``p`` at angle ``a``.
"""

from __future__ import annotations

import numpy as np

from xrayflow.io.cxi import DiffractionData
from xrayflow.simulate import common as C
from xrayflow.simulate.registry import register_modality

STREAMS = ("phantom", "probe", "scan", "noise")


def _setup(cfg, rng, backend, default_nz=None):
    s = C.rng_streams(rng, STREAMS)
    C.check_phantom_config(cfg)
    geo = C.far_field_geometry(cfg)
    voxel = C.check_voxel_size(
        cfg, geo.object_pixel, "the far-field relation lambda*z/(N*p) of the detector geometry"
    )
    photon_kind = C.photon_scaling(cfg)  # noqa: F841 - validates the noise section early
    probe = C.make_probe(cfg, geo.shape, voxel, geo.wavelength, s["probe"])
    C.check_far_field(cfg, geo, probe, C.probe_size_key(cfg))
    positions = C.make_scan(cfg, s["scan"])
    ny, nx = C.lateral_shape(cfg, positions, voxel, geo.shape)
    nz = cfg["phantom"]["shape"][0]
    if nz is None:
        nz = default_nz(ny, nx) if default_nz else 16
    corners = C.check_scan_fits(positions, voxel, (ny, nx), geo.shape)
    return s, geo, voxel, probe, positions, (int(nz), ny, nx), corners


def _model(cfg, trans, probe, spacing, geo, voxel, backend, n_window):
    from xrayflow.errors import PhysicsError  # noqa: PLC0415
    from xrayflow.optics.multislice import MultisliceModel  # noqa: PLC0415

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


def _frames(cfg, geo) -> tuple[int, int]:
    b = geo.binning
    return geo.shape[0] // b, geo.shape[1] // b


def _finish(cfg, geo, data, detector, positions, truth, modality, angles=None, extra_attrs=None):
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


def _slices_key(cfg) -> str:
    """Config key that sets the number of slices (named in slice-check errors)."""
    if cfg["multislice"]["slice_thickness"] is not None:
        return "multislice.slice_thickness"
    return "multislice.n_slices"


def _run_slices(cfg, rng, backend, modality, force_single):
    s, geo, voxel, probe, positions, shape, corners = _setup(cfg, rng, backend)
    phantom = C.make_phantom(cfg, shape, voxel, s["phantom"])
    delta, beta = phantom.delta_beta(cfg["energy_ev"])
    nz = shape[0]
    if force_single:
        n_sl = 1
        key = "phantom.shape"
    else:
        n_sl = C.n_slices_for(cfg, nz, voxel)
        key = _slices_key(cfg)
    d_s, b_s, th = C.slabs(delta, beta, n_sl, voxel)
    hint = "use modality multislice_ptycho or a thinner phantom" if force_single else None
    C.check_slices(cfg, th, voxel, geo.wavelength, geo.shape[0], key=key, hint=hint)
    trans = C.transmission(d_s, b_s, th, geo.wavelength, backend)
    model = _model(cfg, trans, probe, th[:-1], geo, voxel, backend, geo.shape[0])
    detector = C.make_detector(cfg, geo)
    out = C.frame_buffer(cfg, len(corners), _frames(cfg, geo))
    C.batched_intensities(cfg, model, corners, detector, s["noise"], out, centre=True)
    trans_np = backend.to_numpy(trans)
    truth = {
        "object": trans_np[0] if n_sl == 1 else trans_np,
        "probe": probe.astype(np.complex64),
        "positions": positions,
        "corners_px": corners,
        **C.slab_truth(phantom, voxel, th, d_s, b_s),
    }
    return _finish(
        cfg,
        geo,
        out,
        detector,
        positions,
        truth,
        modality,
        extra_attrs={"n_slices": n_sl, "propagator": cfg["multislice"]["propagator"]},
    )


@register_modality("ptycho2d", description="2D far-field ptychography of the projected phantom")
def ptycho2d(config: dict, rng, backend) -> DiffractionData:
    """Single-slice (projection approximation) far-field ptychography."""
    return _run_slices(config, rng, backend, "ptycho2d", force_single=True)


@register_modality("multislice_ptycho", description="far-field ptychography of a thick sample")
def multislice_ptycho(config: dict, rng, backend) -> DiffractionData:
    """Multislice far-field ptychography (thick sample cut into slabs along the beam)."""
    return _run_slices(config, rng, backend, "multislice_ptycho", force_single=False)


def rotate_volume(vol, angle_rad: float, backend):
    """Rotate a (Z, Y, X) volume about y by ``angle_rad`` (the ptychotomo convention)."""
    if backend.is_gpu:
        import cupyx.scipy.ndimage as ndi  # noqa: PLC0415
    else:
        import scipy.ndimage as ndi  # noqa: PLC0415
    if angle_rad == 0.0:
        return vol.copy()
    return ndi.rotate(
        vol,
        float(np.degrees(angle_rad)),
        axes=(0, 2),
        reshape=False,
        order=1,
        mode="constant",
        cval=0.0,
    )


@register_modality("ptychotomo", description="multislice ptychography at a series of angles")
def ptychotomo(config: dict, rng, backend) -> DiffractionData:
    """Ptychographic tomography: rotate δ/β about y, multislice ptychography per angle."""
    cfg = config
    s, geo, voxel, probe, positions, shape, corners = _setup(
        cfg, rng, backend, default_nz=lambda ny, nx: nx
    )
    angles = C.rotation_angles(cfg)
    phantom = C.make_phantom(cfg, shape, voxel, s["phantom"])
    delta, beta = phantom.delta_beta(cfg["energy_ev"])
    nz = shape[0]
    n_sl = C.n_slices_for(cfg, nz, voxel)
    key = _slices_key(cfg)
    _, _, th = C.slabs(delta[:, :1, :1], beta[:, :1, :1], n_sl, voxel)
    C.check_slices(cfg, th, voxel, geo.wavelength, geo.shape[0], key=key)
    detector = C.make_detector(cfg, geo)
    P = len(corners)
    out = C.frame_buffer(cfg, len(angles) * P, _frames(cfg, geo))
    d_dev = backend.asarray(delta.astype(np.float32))
    b_dev = backend.asarray(beta.astype(np.float32))
    for a, ang in enumerate(angles):
        d_r = backend.to_numpy(rotate_volume(d_dev, float(ang), backend)).astype(np.float64)
        b_r = backend.to_numpy(rotate_volume(b_dev, float(ang), backend)).astype(np.float64)
        d_s, b_s, th = C.slabs(d_r, b_r, n_sl, voxel)
        trans = C.transmission(d_s, b_s, th, geo.wavelength, backend)
        model = _model(cfg, trans, probe, th[:-1], geo, voxel, backend, geo.shape[0])
        C.batched_intensities(
            cfg, model, corners, detector, s["noise"], out, offset=a * P, centre=True
        )
    truth = {
        "delta": delta.astype(np.float32),
        "beta": beta.astype(np.float32),
        "probe": probe.astype(np.complex64),
        "positions": positions,
        "angles": angles,
        "corners_px": corners,
        "pixel_size": voxel,
        "voxel_size": voxel,
        "slice_thickness": th,
        "support": phantom.support(),
        "materials": list(phantom.materials),
    }
    return _finish(
        cfg,
        geo,
        out,
        detector,
        np.tile(positions, (len(angles), 1)),
        truth,
        "ptychotomo",
        angles=np.repeat(angles, P),
        extra_attrs={
            "n_slices": n_sl,
            "n_angles": len(angles),
            "n_positions": P,
            "propagator": cfg["multislice"]["propagator"],
            "frame_order": "angle-major: frame = angle_index * n_positions + position_index",
            "rotation": "scipy.ndimage.rotate(volume, degrees(angle), axes=(0, 2), "
            "reshape=False, order=1) about y",
        },
    )
