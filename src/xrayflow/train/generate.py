"""Training sets from the simulate-stage physics, one HDF5 shard per task.

Two kinds (``data.kind``):

* ``ptycho2d`` (PtychoNN style): a random thin object ``O = exp(-i·k·t·(δ - iβ))`` from a
  random projected thickness map (soft-edged blobs on a smooth background), patches of it
  under a Gaussian probe (``optics.gaussian.gaussian_beam``, ``Σ|P|² = photons``), far field
  ``Ψ = F{P·O}`` (``optics.propagation.far_field``, ortho, so ``Σ I = photons × Σ|P O|²/Σ|P|²``).
  Input: sqrt(counts), centred. Targets: patch amplitude and phase.
* ``bragg_cdi3d`` (3D-CDI-NN / AutoPhaseNN style): a random faceted crystal
  (``phantoms.faceted_crystals``) with a smooth strain phase inside, zero-
  padded by ``oversampling`` (2 → 32³ crystal box, 64³ pattern), ``I = |F{ρ}|²`` scaled to
  ``photons`` in total. Input: diffraction amplitude sqrt(counts), centred. Targets: support
  (shape) and phase (0 outside the support).

Noise (``data.noise``, recorded in the shard attrs ``noise_model``):
``poisson_intensity`` (default; photon statistics: counts ~ Poisson(I), then optional Gaussian
read noise, clipped at 0), ``poisson_amplitude`` (AutoPhaseNN's choice: Poisson applied to the
amplitude |F|, *not* photon statistics; kept for comparison) or ``none``.

Parallel generation: shard i uses ``numpy.random.default_rng(SeedSequence([seed, i]))`` only,
so the result does not depend on who generates it. ``data.parallel``: ``mpi`` (rank r makes
shards r, r+W, …; launched with mpiexec), ``dask`` (if installed), ``multiprocessing``,
``serial``; ``auto`` = mpi under an MPI launch with >1 ranks, else dask (if installed) or
multiprocessing when ``workers`` > 1, else serial. Existing complete shards with the same
config are kept (restartable). A ``manifest.json`` lists the shards.

Memory guard: the peak memory of one task (the random object or crystal box, one chunk of
patterns and its FFT intermediates) times the tasks running at once on this node is
estimated from the config and checked (:func:`xrayflow.memory.check_memory`, limit
``data.max_memory_gb``) before anything is generated.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from xrayflow.backend import fftshift, get_backend
from xrayflow.errors import ConfigError, DataError
from xrayflow.io.atomic import atomic_write_text
from xrayflow.memory import check_memory
from xrayflow.train.shards import ShardWriter, shard_info

__all__ = [
    "bragg_patterns",
    "crystal_support",
    "generate",
    "generate_shard",
    "make_probe",
    "ptycho_patterns",
    "random_object",
    "strain_phase",
]


# ----------------------------------------------------------------------------- physics
def make_probe(n: int, pcfg: dict, photons: float) -> np.ndarray:
    """Gaussian probe (n, n) complex64 with Σ|P|² = photons (A's ``gaussian_beam``)."""
    from xrayflow.optics.constants import wavelength  # noqa: PLC0415
    from xrayflow.optics.gaussian import gaussian_beam  # noqa: PLC0415

    lam = wavelength(float(pcfg.get("energy_ev", 8000.0)))
    px = float(pcfg.get("pixel_size", 10e-9))
    p = gaussian_beam(
        (n, n), px, lam, float(pcfg.get("waist_px", n / 8)) * px, z=float(pcfg.get("defocus", 0.0))
    )
    p = np.asarray(p, dtype=np.complex128)
    p *= math.sqrt(photons / float(np.sum(np.abs(p) ** 2)))
    return p.astype(np.complex64)


def random_object(
    shape, ocfg: dict, rng: np.random.Generator, delta_beta: tuple[float, float] | None = None
) -> np.ndarray:
    """Random thin-object transmission (complex64): one material, random projected thickness.

    Thickness map f ∈ [0, 1]: soft-edged blobs (thresholded smooth noise, feature size
    ``feature_px``) plus a weak smooth background. Phase = -phase_max·f (δ > 0 gives a negative
    phase, docs/physics.md); amplitude = exp(-(β/δ)·phase_max·f) with β/δ from the material,
    or = amplitude_min**f when no material is given.
    """
    feat = float(ocfg.get("feature_px", 6.0))
    g = ndimage.gaussian_filter(rng.standard_normal(shape), feat, mode="wrap")
    g /= g.std() + 1e-12
    edge = float(ocfg.get("edge_width", 0.3))
    thr = rng.uniform(-0.5, 0.8)
    f = 1.0 / (1.0 + np.exp(-(g - thr) / edge))
    bg = ndimage.gaussian_filter(rng.standard_normal(shape), 4 * feat, mode="wrap")
    bg = (bg - bg.min()) / (np.ptp(bg) + 1e-12)
    f = np.clip(0.8 * f + 0.2 * bg, 0.0, 1.0)
    phase_max = float(ocfg.get("phase_max", 1.0)) * rng.uniform(0.5, 1.0)
    phase = -phase_max * f
    if delta_beta is not None:
        delta, beta = delta_beta
        log_amp = -(beta / delta) * phase_max * f
    else:
        log_amp = math.log(float(ocfg.get("amplitude_min", 0.8))) * f
    return (np.exp(log_amp) * np.exp(1j * phase)).astype(np.complex64)


def ptycho_patterns(probe: np.ndarray, patches: np.ndarray, backend=None) -> np.ndarray:
    """Expected far-field intensities (B, n, n) of ``probe × patches``, DC at the corner."""
    from xrayflow.optics.propagation import far_field  # noqa: PLC0415

    backend = backend or get_backend("cpu", workers=1)
    F = far_field(probe[None] * patches, backend)
    return (F.real**2 + F.imag**2).astype(np.float64)


def _noisy_amplitude(expected: np.ndarray, dcfg: dict, rng) -> np.ndarray:
    """Network input (sqrt of counts) from expected counts, by the configured noise model."""
    from xrayflow.detector import poisson_counts  # noqa: PLC0415

    noise = dcfg.get("noise", "poisson_intensity")
    read = float(dcfg.get("read_noise", 0.0))
    if noise == "poisson_intensity":
        counts = poisson_counts(expected, rng).astype(np.float64)
        if read > 0:
            counts = np.clip(counts + rng.normal(0.0, read, counts.shape), 0.0, None)
        return np.sqrt(counts)
    if noise == "poisson_amplitude":
        return poisson_counts(np.sqrt(expected), rng).astype(np.float64)
    if noise == "none":
        return np.sqrt(expected)
    raise ConfigError(f"train.data.noise: unknown {noise!r}")


def crystal_support(m: int, rng: np.random.Generator, ccfg: dict) -> np.ndarray:
    """Binary support (m, m, m) float32 of one random faceted crystal inside the box.

    Uses ``phantoms.faceted_crystals`` (truncated octahedron: {111} and {100} facets, random
    rotation, jittered facet distances, ``extra_facets`` random planes) with the {111} facet
    distance drawn from ``radius`` × m voxels, then rolled so that its centre of mass lies
    within half a voxel of the box centre ``(m - 1) / 2``: a diffraction intensity does not
    see translations, so a network can only learn crystals at a fixed place (and the twin
    ``rho(-r)`` about that centre, see :func:`xrayflow.train.loop.losses`).
    """
    from xrayflow.phantoms import faceted_crystals  # noqa: PLC0415

    lo, hi = ccfg.get("radius", [0.2, 0.45])
    ph = faceted_crystals(
        (m, m, m),
        1.0,
        1,
        rng,
        radius_range=(float(lo) * m, float(hi) * m),
        facet_jitter=float(ccfg.get("jitter", 0.1)),
        extra_facets=int(ccfg.get("extra_facets", 2)),
    )
    sup = (ph.labels > 0).astype(np.float32)
    com = ndimage.center_of_mass(sup)
    shift = [int(round((m - 1) / 2 - c)) for c in com]
    return np.roll(sup, shift, axis=(0, 1, 2))


def strain_phase(support: np.ndarray, rng: np.random.Generator, ccfg: dict) -> np.ndarray:
    """Smooth strain phase inside the support, mean 0, max |φ| = U(0.3, 1)·phase_max."""
    m = support.shape[0]
    sig = float(ccfg.get("strain_scale", 0.25)) * m
    g = ndimage.gaussian_filter(rng.standard_normal(support.shape), sig, mode="wrap")
    inside = support > 0
    if not inside.any():
        return np.zeros_like(support)
    g = g - g[inside].mean()
    g /= np.abs(g[inside]).max() + 1e-12
    amp = float(ccfg.get("phase_max", 1.0)) * rng.uniform(0.3, 1.0)
    return (amp * g * inside).astype(np.float32)


def bragg_patterns(rho: np.ndarray, oversampling: int, photons: float, backend=None):
    """Expected intensities (..., N, N, N), N = m·oversampling, of crystals ρ (..., m, m, m)
    zero-padded, DC at the corner, each scaled to ``photons`` in total (ortho FFT)."""
    backend = backend or get_backend("cpu", workers=1)
    m = rho.shape[-1]
    n = m * int(oversampling)
    lo = (n - m) // 2
    box = np.zeros((*rho.shape[:-3], n, n, n), np.complex128)
    box[..., lo : lo + m, lo : lo + m, lo : lo + m] = rho
    F = backend.fftn(box, axes=(-3, -2, -1), overwrite_x=True)
    inten = F.real**2 + F.imag**2
    total = inten.sum(axis=(-3, -2, -1), keepdims=True)
    return inten * (photons / np.maximum(total, 1e-300))


# ----------------------------------------------------------------------------- shards
def _shard_attrs(config: dict, index: int, n_shards: int) -> dict:
    d = config["data"]
    return {
        "kind": d["kind"],
        "shard_index": index,
        "n_shards": n_shards,
        "shard_uid": f"{config.get('seed', 0)}-{index}",
        "seed": int(config.get("seed", 0)),
        "noise_model": d.get("noise", "poisson_intensity"),
        "photons": float(d["photons"]),
        "read_noise": float(d.get("read_noise", 0.0)),
        "centred": True,
        "input_transform": "sqrt_counts"
        if d.get("noise") != "poisson_amplitude"
        else "poisson_amplitude",
        "config_hash": _config_hash(config),
        "config": json.dumps(config, default=str),
    }


def _config_hash(config: dict) -> str:
    import hashlib  # noqa: PLC0415

    keep = {
        "seed": config.get("seed", 0),
        "data": {
            k: v
            for k, v in config["data"].items()
            if k not in ("parallel", "workers", "max_memory_gb")
        },
    }
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def shard_path(out_dir, index: int) -> Path:
    return Path(out_dir) / f"shard-{index:05d}.h5"


def _provenance(config, seed):
    try:
        from xrayflow.provenance import provenance  # noqa: PLC0415

        return provenance(config, seed)
    except Exception:  # pragma: no cover
        return {"seed": seed}


def generate_shard(config: dict, index: int, out_dir) -> Path:
    """Generate shard ``index`` (deterministic from ``seed`` and ``index``); returns its path."""
    d = config["data"]
    n_shards = int(d["n_shards"])
    path = shard_path(out_dir, index)
    chash = _config_hash(config)
    if path.is_file():
        try:
            if shard_info(path)["attrs"].get("config_hash") == chash:
                return path
        except DataError:
            pass
    seed = int(config.get("seed", 0))
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    n = int(d["samples_per_shard"])
    chunk = int(d.get("chunk_rows", 32))
    attrs = _shard_attrs(config, index, n_shards)
    attrs["provenance"] = json.dumps(_provenance(config, seed), default=str)
    backend = get_backend("cpu", workers=1)
    kind = d["kind"]
    if kind == "ptycho2d":
        p = d.get("ptycho2d", {})
        size = int(p.get("size", 64))
        probe = make_probe(size, p.get("probe", {}), float(d["photons"]))
        ocfg = p.get("object", {})
        dbeta = None
        if ocfg.get("material"):
            from xrayflow.optics.materials import refractive_index  # noqa: PLC0415

            dbeta = refractive_index(
                ocfg["material"], float(p.get("probe", {}).get("energy_ev", 8000.0))
            )
        osz = int(p.get("object_size", 4 * size))
        per_obj = int(p.get("patches_per_object", 16))
        if osz < size:
            raise ConfigError("train.data.ptycho2d.object_size must be >= size")
        attrs["pattern_size"] = size
        with ShardWriter(
            path,
            n,
            (size, size),
            {"amplitude": (size, size), "phase": (size, size)},
            chunk,
            attrs,
            d.get("compression"),
            extras={"probe": probe},
        ) as w:
            _fill_ptycho2d(w, probe, ocfg, dbeta, osz, per_obj, d, rng, backend)
    elif kind == "bragg_cdi3d":
        c = d.get("bragg_cdi3d", {})
        m = int(c.get("size", 32))
        ov = int(c.get("oversampling", 2))
        N = m * ov
        attrs["oversampling"] = ov
        with ShardWriter(
            path,
            n,
            (N, N, N),
            {"support": (m, m, m), "phase": (m, m, m)},
            chunk,
            attrs,
            d.get("compression"),
        ) as w:
            _fill_bragg(w, m, ov, c, d, rng, backend)
    else:
        raise ConfigError(f"train.data.kind: unknown {kind!r} (ptycho2d | bragg_cdi3d)")
    return path


def _fill_ptycho2d(w: ShardWriter, probe, ocfg, dbeta, osz, per_obj, d, rng, backend) -> None:
    """Rows of a 2D shard: one random object per ``per_obj`` rows, random patches of it."""
    from xrayflow.optics.multislice import extract_patches  # noqa: PLC0415

    size = probe.shape[-1]
    obj, obj_id = None, -1
    for s in range(0, w.n, w.chunk_rows):
        e = min(w.n, s + w.chunk_rows)
        ids = np.arange(s, e) // per_obj
        patches = np.empty((e - s, size, size), np.complex64)
        for oid in np.unique(ids):
            if oid != obj_id:
                obj, obj_id = random_object((osz, osz), ocfg, rng, dbeta), oid
            rows = np.flatnonzero(ids == oid)
            corners = rng.integers(0, osz - size + 1, (len(rows), 2))
            patches[rows] = extract_patches(obj, corners, size)[0]
        amp = _noisy_amplitude(ptycho_patterns(probe, patches, backend), d, rng)
        w.write(
            s,
            fftshift(amp, axes=(-2, -1)),
            {"amplitude": np.abs(patches), "phase": np.angle(patches)},
        )


def _fill_bragg(w: ShardWriter, m, ov, c, d, rng, backend) -> None:
    """Rows of a 3D shard: random crystals with strain, patterns batched per chunk."""
    for s in range(0, w.n, w.chunk_rows):
        e = min(w.n, s + w.chunk_rows)
        sup = np.stack([crystal_support(m, rng, c) for _ in range(e - s)])
        ph = np.stack([strain_phase(x, rng, c) for x in sup])
        expected = bragg_patterns(sup * np.exp(1j * ph), ov, float(d["photons"]), backend)
        amp = _noisy_amplitude(expected, d, rng)
        w.write(s, fftshift(amp, axes=(-3, -2, -1)), {"support": sup, "phase": ph})


def _work(args):
    config, index, out_dir = args
    return str(generate_shard(config, index, out_dir))


def _mpi_comm():
    from xrayflow.train.distributed import env_rank_size  # noqa: PLC0415

    _, size, _ = env_rank_size()
    if size <= 1:
        return None
    try:
        from mpi4py import MPI  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return None
    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


def task_memory(config: dict) -> dict[str, float]:
    """Estimated peak bytes of one generation task (one shard being written), by part."""
    d = config["data"]
    rows = max(1, min(int(d.get("chunk_rows", 32)), int(d.get("samples_per_shard", 1))))
    if d.get("kind", "ptycho2d") == "bragg_cdi3d":
        c = d.get("bragg_cdi3d", {})
        m = float(c.get("size", 32))
        n = m * int(c.get("oversampling", 2))
        return {
            f"{rows} padded crystals and their FFT ({int(n)}^3 complex128)": 16.0 * 3 * rows * n**3,
            f"{rows} patterns, counts and amplitudes ({int(n)}^3 float64)": 8.0 * 4 * rows * n**3,
            f"{rows} supports and phases ({int(m)}^3)": 8.0 * 6 * rows * m**3,
        }
    p = d.get("ptycho2d", {})
    size = float(p.get("size", 64))
    osz = float(p.get("object_size", 4 * size))
    return {
        f"random object ({int(osz)}^2, float64 intermediates)": 8.0 * 10 * osz**2,
        f"{rows} patches and patterns ({int(size)}^2)": 8.0 * 10 * rows * size**2,
    }


def generate(
    config: dict, out_dir, parallel: str | None = None, workers: int | None = None, log=print
) -> dict:
    """Generate all shards of ``config['data']`` into ``out_dir``; return the manifest.

    Args:
        parallel: overrides ``data.parallel`` (auto | serial | multiprocessing | mpi | dask).
        workers: overrides ``data.workers`` (0 = CPUs available).
    """
    d = config["data"]
    out_dir = Path(out_dir)
    n_shards = int(d["n_shards"])
    mode = parallel or d.get("parallel", "auto")
    nw = workers if workers is not None else int(d.get("workers", 0))
    if nw <= 0:
        try:
            nw = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover
            nw = os.cpu_count() or 1
    comm = _mpi_comm()
    if mode == "auto":
        if comm is not None:
            mode = "mpi"
        elif nw > 1 and n_shards > 1:
            mode = "dask" if importlib.util.find_spec("dask") else "multiprocessing"
        else:
            mode = "serial"
    at_once = 1 if mode in ("serial", "mpi") else max(1, min(nw, n_shards))
    parts = task_memory(config)
    if at_once > 1:
        parts = {f"{k} x {at_once} workers": v * at_once for k, v in parts.items()}
    check_memory(parts, "train --generate", d.get("max_memory_gb"), key="data.max_memory_gb")
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(config, i, out_dir) for i in range(n_shards)]
    rank = 0
    if mode == "mpi":
        if comm is None:
            raise ConfigError("train.data.parallel: mpi requested but not launched under MPI")
        rank, size = comm.Get_rank(), comm.Get_size()
        for j in jobs[rank::size]:
            _work(j)
        comm.Barrier()
    elif mode == "dask":
        try:
            import dask  # noqa: PLC0415
        except ImportError:
            raise ConfigError("train.data.parallel: dask is not installed") from None
        tasks = [dask.delayed(_work)(j) for j in jobs]
        dask.compute(*tasks, scheduler="processes", num_workers=nw)
    elif mode == "multiprocessing":
        import multiprocessing as mp  # noqa: PLC0415

        with mp.get_context("spawn").Pool(min(nw, n_shards)) as pool:
            for p in pool.imap_unordered(_work, jobs):
                log(f"wrote {p}")
    elif mode == "serial":
        for j in jobs:
            log(f"wrote {_work(j)}")
    else:
        raise ConfigError(f"train.data.parallel: unknown {mode!r}")
    manifest = {
        "format": "xrayflow-train-manifest",
        "kind": d["kind"],
        "n_shards": n_shards,
        "config_hash": _config_hash(config),
        "shards": [
            {"path": shard_path(out_dir, i).name, "n_samples": int(d["samples_per_shard"])}
            for i in range(n_shards)
        ],
        "config": config,
        "parallel": mode,
    }
    if rank == 0:
        atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=1, default=str))
    return manifest
