"""Ptycho-tomography simulation: ``ptychotomo``.

Far-field multislice ptychography (:mod:`xrayflow.modalities.ptycho2d.simulate`) repeated
for each rotation angle after rotating the δ and β volumes about the y axis with
``scipy.ndimage.rotate(vol, degrees(angle), axes=(0, 2), reshape=False, order=1)``
(``cupyx.scipy.ndimage.rotate`` on the GPU). Frames are ordered angle-major: frame
``a·P + p`` is position ``p`` at angle ``a``.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage

from xrayflow.io.cxi import DiffractionData
from xrayflow.modalities import simulation as C
from xrayflow.modalities.ptycho2d.simulate import (
    finish,
    frame_shape,
    multislice_model,
    setup,
    slices_key,
)


def rotate_volume(vol, angle_rad: float, backend):
    """Rotate a (Z, Y, X) volume about y by ``angle_rad`` (the ptychotomo convention)."""
    if backend.is_gpu:
        import cupyx.scipy.ndimage as ndi
    else:
        ndi = scipy.ndimage
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


def ptychotomo(config: dict, rng, backend) -> DiffractionData:
    """Ptychographic tomography: rotate δ/β about y, multislice ptychography per angle."""
    cfg = config
    s, geo, voxel, probe, positions, shape, corners = setup(
        cfg, rng, backend, default_nz=lambda ny, nx: nx
    )
    angles = C.rotation_angles(cfg)
    phantom = C.make_phantom(cfg, shape, voxel, s["phantom"])
    delta, beta = phantom.delta_beta(cfg["energy_ev"])
    nz = shape[0]
    n_sl = C.n_slices_for(cfg, nz, voxel)
    key = slices_key(cfg)
    _, _, th = C.slabs(delta[:, :1, :1], beta[:, :1, :1], n_sl, voxel)
    C.check_slices(cfg, th, voxel, geo.wavelength, geo.shape[0], key=key)
    detector = C.make_detector(cfg, geo)
    P = len(corners)
    out = C.frame_buffer(cfg, len(angles) * P, frame_shape(cfg, geo))
    d_dev = backend.asarray(delta.astype(np.float32))
    b_dev = backend.asarray(beta.astype(np.float32))
    for a, ang in enumerate(angles):
        d_r = backend.to_numpy(rotate_volume(d_dev, float(ang), backend)).astype(np.float64)
        b_r = backend.to_numpy(rotate_volume(b_dev, float(ang), backend)).astype(np.float64)
        d_s, b_s, th = C.slabs(d_r, b_r, n_sl, voxel)
        trans = C.transmission(d_s, b_s, th, geo.wavelength, backend)
        model = multislice_model(cfg, trans, probe, th[:-1], geo, voxel, backend, geo.shape[0])
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
    return finish(
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
