"""3D voxel phantoms: label volumes of named materials, deterministic from a seed.

A :class:`Phantom` holds ``labels`` ``(Z, Y, X)`` uint8 indexing ``materials`` (index 0 is the
background, usually ``"vacuum"``) and the voxel size in metres. ``z`` is along the beam,
``y`` vertical (the tomographic rotation axis), ``x`` horizontal. Voxel ``i`` of an
``N``-voxel axis has its centre at coordinate ``(i − N//2)·voxel`` (index ``N//2`` is 0,
as in :mod:`xrayflow.scans` and :func:`xrayflow.optics.gaussian.centred_coordinates`).

Generators (all vectorised over voxels; random ones take ``rng``: a ``numpy.random.Generator``
or an integer seed, and the same seed always gives the same volume):

* :func:`siemens_star` — spokes of a resolution star, optionally only in some slices.
* :func:`faceted_crystals` — convex polyhedra (intersections of half-spaces) of random
  size and orientation; their geometry is kept in ``meta["crystals"]`` and
  :func:`convex_polyhedron_mask` rebuilds each one's support (for Bragg CDI).
* :func:`hollow_cone` — a hollow (glass) cone with its axis along y.
* :func:`battery_cathode` — non-overlapping ellipsoidal particles of LiCoO2, LiFePO4 and
  LiMn2O4 in a porous carbon-black / PVDF binder matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from xrayflow.backend import fftfreq, fftn, ifftn
from xrayflow.errors import PhysicsError
from xrayflow.optics.materials import refractive_index

__all__ = [
    "PHANTOMS",
    "Phantom",
    "battery_cathode",
    "convex_polyhedron_mask",
    "faceted_crystals",
    "hollow_cone",
    "make_phantom",
    "siemens_star",
]


def _voxel3(voxel_size) -> tuple[float, float, float]:
    v = np.asarray(voxel_size, dtype=np.float64).ravel()
    if v.size == 1:
        v = np.repeat(v, 3)
    if v.size != 3 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise PhysicsError(f"voxel_size must be positive (scalar or (z, y, x)), got {voxel_size!r}")
    return float(v[0]), float(v[1]), float(v[2])


def _shape3(shape) -> tuple[int, int, int]:
    s = tuple(int(v) for v in shape)
    if len(s) != 3 or min(s) < 1:
        raise PhysicsError(f"phantom shape must be (Z, Y, X) with positive sizes, got {shape!r}")
    return s


def _axis_coords(n: int, v: float, start: int = 0, stop: int | None = None) -> np.ndarray:
    stop = n if stop is None else stop
    return (np.arange(start, stop) - n // 2) * v


def _coords(shape, voxel):
    """Sparse centred coordinates ``(z[:,None,None], y[None,:,None], x[None,None,:])`` in m."""
    (nz, ny, nx), (vz, vy, vx) = shape, voxel
    return (
        _axis_coords(nz, vz)[:, None, None],
        _axis_coords(ny, vy)[None, :, None],
        _axis_coords(nx, vx)[None, None, :],
    )


@dataclass
class Phantom:
    """A voxel volume of materials.

    Attributes:
        labels: ``(Z, Y, X)`` uint8; value ``i`` means ``materials[i]``.
        materials: material names known to :mod:`xrayflow.optics.materials`; index 0 is the
            background.
        voxel_size: m, scalar or ``(vz, vy, vx)``.
        meta: generator details (parameters, crystal geometry, achieved fractions, ...).
    """

    labels: np.ndarray
    materials: list[str]
    voxel_size: float | tuple[float, float, float]
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        labels = np.asarray(self.labels)
        if labels.ndim != 3:
            raise PhysicsError(f"phantom labels must be 3D (Z, Y, X), got shape {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.materials)):
            raise PhysicsError(
                f"labels range {labels.min()}..{labels.max()} does not fit "
                f"{len(self.materials)} materials {self.materials}"
            )
        if len(self.materials) > 256:
            raise PhysicsError("at most 256 materials fit in uint8 labels")
        self.labels = labels.astype(np.uint8, copy=False)
        self.materials = [str(m) for m in self.materials]
        _voxel3(self.voxel_size)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.labels.shape)

    @property
    def voxel_size_zyx(self) -> tuple[float, float, float]:
        """Voxel size ``(vz, vy, vx)`` in m."""
        return _voxel3(self.voxel_size)

    @property
    def extent(self) -> tuple[float, float, float]:
        """Physical size ``(Z·vz, Y·vy, X·vx)`` in m."""
        return tuple(n * v for n, v in zip(self.shape, self.voxel_size_zyx, strict=True))

    def material_table(self, energy_ev) -> tuple[np.ndarray, np.ndarray]:
        """``(delta, beta)`` per material index, float64 arrays of length ``len(materials)``."""

        pairs = [refractive_index(m, float(energy_ev)) for m in self.materials]
        d = np.array([p[0] for p in pairs], dtype=np.float64)
        b = np.array([p[1] for p in pairs], dtype=np.float64)
        return d, b

    def delta_beta(self, energy_ev) -> tuple[np.ndarray, np.ndarray]:
        """Volumes of δ and β (float64, ``(Z, Y, X)``) at photon energy ``energy_ev`` (eV)."""
        d, b = self.material_table(energy_ev)
        return d[self.labels], b[self.labels]

    def support(self) -> np.ndarray:
        """Bool volume: True where the material is not the background."""
        return self.labels != 0

    def density(self) -> np.ndarray:
        """Binary support as float64 (1 inside the sample, 0 outside), e.g. for CDI."""
        return self.support().astype(np.float64)

    def fractions(self) -> dict[str, float]:
        """Volume fraction of each material over the whole volume."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.materials))
        total = max(self.labels.size, 1)
        out: dict[str, float] = {}
        for name, c in zip(self.materials, counts, strict=False):
            out[name] = out.get(name, 0.0) + float(c) / total
        return out

    def projected(self, energy_ev) -> tuple[np.ndarray, np.ndarray]:
        """Projections ``(∫δ dz, ∫β dz)`` along z (beam), in m, shape ``(Y, X)``."""
        d, b = self.delta_beta(energy_ev)
        vz = self.voxel_size_zyx[0]
        return d.sum(axis=0) * vz, b.sum(axis=0) * vz

    def slices(self, energy_ev, n_slices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Group the z voxels into ``n_slices`` slabs for multislice.

        Returns ``(delta (S, Y, X), beta (S, Y, X), thickness (S,) m)``: δ and β averaged
        over each slab (so that ``k·thickness·δ`` is the slab's phase), slab thicknesses
        summing to ``Z·vz``. Slabs differ by at most one voxel.
        """
        n_slices = int(n_slices)
        nz = self.shape[0]
        if not 1 <= n_slices <= nz:
            raise PhysicsError(f"n_slices must be between 1 and Z = {nz}, got {n_slices}")
        d, b = self.delta_beta(energy_ev)
        edges = np.linspace(0, nz, n_slices + 1).round().astype(int)
        counts = np.diff(edges)
        d_s = np.add.reduceat(d, edges[:-1], axis=0) / counts[:, None, None]
        b_s = np.add.reduceat(b, edges[:-1], axis=0) / counts[:, None, None]
        return d_s, b_s, counts * self.voxel_size_zyx[0]


# ---------------------------------------------------------------------------------------
# Siemens star


def siemens_star(
    shape,
    voxel_size,
    material: str = "gold",
    spokes: int = 36,
    radius: float | None = None,
    inner_radius: float = 0.0,
    thickness: float | None = None,
    z_range: tuple[int, int] | None = None,
    background: str = "vacuum",
) -> Phantom:
    """Siemens star in the (y, x) plane: ``spokes`` wedges of ``material``.

    Args:
        shape: ``(Z, Y, X)``; voxel_size: m (scalar or (vz, vy, vx)).
        spokes: number of material wedges (and as many gaps) around the circle; the first
            wedge is centred on the +x axis.
        radius: outer radius in m (default 45 % of the smaller lateral extent).
        inner_radius: radius of the empty centre in m.
        thickness: star thickness along z in m, centred in the volume (rounded to whole
            voxels, at least one). Ignored when ``z_range`` is given.
        z_range: ``(start, stop)`` slice indices along z holding the star (Python slice
            semantics); default all slices (or ``thickness``).
    """
    shape, voxel = _shape3(shape), _voxel3(voxel_size)
    spokes = int(spokes)
    if spokes < 1:
        raise PhysicsError(f"spokes must be >= 1, got {spokes}")
    nz, ny, nx = shape
    if radius is None:
        radius = 0.45 * min(ny * voxel[1], nx * voxel[2])
    _, y, x = _coords(shape, voxel)
    r = np.hypot(y, x)[0]
    theta = np.arctan2(y, x)[0]
    plane = (np.cos(spokes * theta) > 0) & (r <= radius) & (r >= inner_radius)
    if z_range is not None:
        z0, z1, _ = slice(*z_range).indices(nz)
    elif thickness is not None:
        nt = max(1, min(nz, int(round(thickness / voxel[0]))))
        z0 = nz // 2 - nt // 2
        z1 = z0 + nt
    else:
        z0, z1 = 0, nz
    labels = np.zeros(shape, dtype=np.uint8)
    labels[z0:z1] = plane
    return Phantom(
        labels,
        [background, material],
        voxel_size,
        meta={
            "kind": "siemens_star",
            "spokes": spokes,
            "radius": float(radius),
            "inner_radius": float(inner_radius),
            "z_range": (int(z0), int(z1)),
        },
    )


# ---------------------------------------------------------------------------------------
# Faceted crystals


def _random_rotation(rng) -> np.ndarray:
    """Uniform random 3×3 rotation matrix (from a normalised Gaussian quaternion)."""
    w, x, y, z = rng.normal(size=4)
    n = math.sqrt(w * w + x * x + y * y + z * z) or 1.0
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


# {100} and {111} facet normals: a truncated octahedron, the Wulff shape of fcc metals.
_N100 = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
_N111 = np.array([[a, b, c] for a in (1, -1) for b in (1, -1) for c in (1, -1)], float) / math.sqrt(
    3.0
)


def convex_polyhedron_mask(shape, voxel_size, center, normals, offsets) -> np.ndarray:
    """Bool volume of the voxels whose centres satisfy ``n_i·(r − center) <= d_i`` for all i.

    ``center`` (z, y, x) m, ``normals`` (F, 3) unit vectors in (z, y, x) components,
    ``offsets`` (F,) m. Coordinates as in the module docstring.
    """
    shape, voxel = _shape3(shape), _voxel3(voxel_size)
    z, y, x = _coords(shape, voxel)
    c = np.asarray(center, dtype=np.float64)
    nrm = np.asarray(normals, dtype=np.float64)
    off = np.asarray(offsets, dtype=np.float64)
    inside = np.ones(shape, dtype=bool)
    for n, d in zip(nrm, off, strict=True):
        inside &= n[0] * (z - c[0]) + n[1] * (y - c[1]) + n[2] * (x - c[2]) <= d
    return inside


def _box_coords(shape, voxel, center, bound):
    """Voxel window of the cube ``center ± bound`` (m), clipped to the volume.

    Returns ``(slices, (z, y, x))``: the (z, y, x) slices of the window and sparse voxel-centre
    coordinates (m) relative to ``center``, shaped as in :func:`_coords`.
    """
    sl, local = [], []
    for ax in range(3):
        n, v = shape[ax], voxel[ax]
        lo = max(0, int(math.floor((center[ax] - bound) / v + n // 2)))
        hi = min(n, int(math.ceil((center[ax] + bound) / v + n // 2)) + 1)
        sl.append(slice(lo, hi))
        local.append(_axis_coords(n, v, lo, hi) - center[ax])
    return tuple(sl), (local[0][:, None, None], local[1][None, :, None], local[2][None, None, :])


def _polyhedron_in_box(shape, voxel, center, normals, offsets, bound):
    """(slices, mask) of a polyhedron evaluated only inside its bounding box."""
    sl, (z, y, x) = _box_coords(shape, voxel, center, bound)
    dist = np.full((z.shape[0], y.shape[1], x.shape[2]), -np.inf)
    for n, d in zip(normals, offsets, strict=True):
        np.maximum(dist, n[0] * z + n[1] * y + n[2] * x - d, out=dist)
    return sl, dist <= 0


def faceted_crystals(
    shape,
    voxel_size,
    n_crystals: int = 1,
    rng=None,
    material: str | list[str] = "gold",
    radius_range: tuple[float, float] | None = None,
    facet_ratio_range: tuple[float, float] = (1.05, 1.25),
    facet_jitter: float = 0.1,
    extra_facets: int = 0,
    background: str = "vacuum",
    max_tries: int = 2000,
) -> Phantom:
    """Non-overlapping convex crystals of random size, shape and orientation.

    Each crystal is the intersection of half-spaces ``n_i·(r − c) <= d_i``: the eight {111}
    facets at distance ``s`` and the six {100} facets at ``s·ratio`` (a truncated
    octahedron; ``ratio`` from ``facet_ratio_range``, ≥ √3 gives an octahedron), every
    distance scaled by ``1 + facet_jitter·U(−1, 1)``, plus ``extra_facets`` random planes,
    all rotated by a uniform random rotation. ``s`` (m, the {111} facet distance) is drawn
    from ``radius_range`` (default ``(s_max/2, s_max)`` with ``s_max = 0.35·extent/(√3·n^⅓)``,
    so that the crystals fit). Crystals lie fully inside the volume.

    ``meta["crystals"]`` lists ``{"center", "normals", "offsets", "material"}`` (m, (z, y, x));
    ``meta["instances"]`` is an int16 volume with crystal ``k`` as ``k + 1``.
    """
    shape, voxel = _shape3(shape), _voxel3(voxel_size)
    rng = np.random.default_rng(rng)
    n_crystals = int(n_crystals)
    if n_crystals < 0:
        raise PhysicsError(f"n_crystals must be >= 0, got {n_crystals}")
    ext = np.array(shape) * np.array(voxel)
    if radius_range is None:
        s_max = 0.35 * ext.min() / (math.sqrt(3.0) * max(n_crystals, 1) ** (1.0 / 3.0))
        radius_range = (0.5 * s_max, s_max)
    r_lo, r_hi = (float(v) for v in radius_range)
    if not 0 < r_lo <= r_hi:
        raise PhysicsError(f"radius_range must be 0 < low <= high, got {radius_range!r}")
    mats = [material] if isinstance(material, str) else list(material)
    materials = [background] + list(dict.fromkeys(mats))
    labels = np.zeros(shape, dtype=np.uint8)
    instances = np.zeros(shape, dtype=np.int16)
    crystals: list[dict] = []
    centres: list[np.ndarray] = []
    bounds: list[float] = []
    half = ext / 2.0
    lo_edge = -np.array([n // 2 for n in shape]) * np.array(voxel)
    for k in range(n_crystals):
        for _ in range(max_tries):
            s = rng.uniform(r_lo, r_hi)
            ratio = rng.uniform(*facet_ratio_range)
            normals = np.concatenate([_N111, _N100])
            offsets = np.concatenate([np.full(8, s), np.full(6, s * ratio)])
            offsets = offsets * (1.0 + facet_jitter * rng.uniform(-1, 1, size=offsets.size))
            if extra_facets:
                extra = rng.normal(size=(int(extra_facets), 3))
                extra /= np.linalg.norm(extra, axis=1, keepdims=True)
                normals = np.concatenate([normals, extra])
                offsets = np.concatenate(
                    [offsets, s * rng.uniform(0.8, 1.2, size=int(extra_facets))]
                )
            # the {111} octahedron alone has circumradius sqrt(3)·max d; the cube sqrt(3)·max d
            bound = math.sqrt(3.0) * min(offsets[:8].max(), offsets[8:14].max())
            rot = _random_rotation(rng)
            normals = normals @ rot.T
            margin = bound + np.array(voxel)
            if np.any(margin >= half):
                continue
            c = lo_edge + margin + rng.uniform(size=3) * (ext - 2 * margin)
            if any(
                np.linalg.norm(c - c2) < bound + b2 + max(voxel)
                for c2, b2 in zip(centres, bounds, strict=True)
            ):
                continue
            break
        else:
            raise PhysicsError(
                f"could not place crystal {k + 1} of {n_crystals} without overlap in "
                f"{max_tries} tries; use fewer or smaller crystals (radius_range) or a larger "
                f"volume"
            )
        mat = mats[int(rng.integers(len(mats)))] if len(mats) > 1 else mats[0]
        sl, inside = _polyhedron_in_box(shape, voxel, c, normals, offsets, bound)
        labels[sl][inside] = materials.index(mat)
        instances[sl][inside] = k + 1
        centres.append(c)
        bounds.append(bound)
        crystals.append({"center": c, "normals": normals, "offsets": offsets, "material": mat})
    return Phantom(
        labels,
        materials,
        voxel_size,
        meta={"kind": "faceted_crystals", "crystals": crystals, "instances": instances},
    )


# ---------------------------------------------------------------------------------------
# Hollow cone


def hollow_cone(
    shape,
    voxel_size,
    material: str = "glass",
    radius: float | None = None,
    top_radius: float | None = None,
    wall_thickness: float | None = None,
    height: float | None = None,
    background: str = "vacuum",
) -> Phantom:
    """Hollow cone (open at both ends) with its axis along y, centred in the volume.

    The outer radius grows linearly from ``top_radius`` at ``y = −height/2`` (top of the
    image) to ``radius`` at ``y = +height/2``. ``wall_thickness`` is measured in the
    cross-section perpendicular to the axis (a (z, x) plane, what a tomographic slice about
    y shows): voxels with ``R(y) − t < ρ <= R(y)``, ``ρ = √(z² + x²)``; where ``R < t`` the
    cone is solid. Defaults: ``radius`` 40 % of the smaller (z, x) extent, ``top_radius``
    a quarter of it, ``wall_thickness`` 15 % of ``radius`` (at least 2 voxels), ``height``
    80 % of the y extent.
    """
    shape, voxel = _shape3(shape), _voxel3(voxel_size)
    nz, ny, nx = shape
    if radius is None:
        radius = 0.4 * min(nz * voxel[0], nx * voxel[2])
    if top_radius is None:
        top_radius = 0.25 * radius
    if wall_thickness is None:
        wall_thickness = max(0.15 * radius, 2 * max(voxel[0], voxel[2]))
    if height is None:
        height = 0.8 * ny * voxel[1]
    if not (radius > 0 and top_radius >= 0 and wall_thickness > 0 and height > 0):
        raise PhysicsError("hollow_cone needs radius, wall_thickness, height > 0, top_radius >= 0")
    z, y, x = _coords(shape, voxel)
    rho = np.hypot(z, x)  # (Z, 1, X)
    frac = (y + height / 2.0) / height  # (1, Y, 1)
    outer = top_radius + (radius - top_radius) * frac
    inside_y = (frac >= 0) & (frac <= 1)
    wall = (rho <= outer) & (rho > outer - wall_thickness) & inside_y
    return Phantom(
        wall.astype(np.uint8),
        [background, material],
        voxel_size,
        meta={
            "kind": "hollow_cone",
            "radius": float(radius),
            "top_radius": float(top_radius),
            "wall_thickness": float(wall_thickness),
            "height": float(height),
        },
    )


# ---------------------------------------------------------------------------------------
# Battery cathode

DEFAULT_CATHODE_FRACTIONS = {"LiCoO2": 0.12, "LiFePO4": 0.10, "LiMn2O4": 0.08}


def _smooth_noise(shape, sigma_vox, rng) -> np.ndarray:
    """Gaussian-filtered white noise (periodic), computed by FFT."""
    noise = rng.standard_normal(shape)
    k = np.meshgrid(*[fftfreq(n) for n in shape], indexing="ij", sparse=True)
    f2 = sum((kk * s) ** 2 for kk, s in zip(k, sigma_vox, strict=True))
    return ifftn(fftn(noise, norm="backward") * np.exp(-2.0 * np.pi**2 * f2), norm="backward").real


def _ellipsoid_in_box(shape, voxel, center, axes_rot, semi, bound):
    """(slices, mask) of an ellipsoid evaluated only inside its bounding box."""
    sl, (z, y, x) = _box_coords(shape, voxel, center, bound)
    q = np.zeros((z.shape[0], y.shape[1], x.shape[2]))
    for i in range(3):
        u = axes_rot[i, 0] * z + axes_rot[i, 1] * y + axes_rot[i, 2] * x
        q += (u / semi[i]) ** 2
    return sl, q <= 1.0


def battery_cathode(
    shape,
    voxel_size,
    rng=None,
    fractions: dict[str, float] | None = None,
    radius_range: tuple[float, float] | None = None,
    aspect_range: tuple[float, float] = (1.0, 1.6),
    porosity: float = 0.15,
    carbon_fraction: float = 0.3,
    pore_size: float | None = None,
    binder: str = "binder",
    carbon: str = "carbon_black",
    pore_material: str = "vacuum",
    gap: float | None = None,
    pillar: bool = False,
    max_attempts: int = 20000,
    max_failures: int = 400,
) -> Phantom:
    """Composite cathode: active particles in a porous carbon-black/PVDF matrix.

    Particles are prolate ellipsoids (aspect ratio from ``aspect_range``, random orientation)
    of the compounds in ``fractions`` (name -> target volume fraction of the sample region;
    default LiCoO2 0.12, LiFePO4 0.10, LiMn2O4 0.08), placed by random sequential addition
    without overlap (voxel-exact: a new particle may not touch any earlier particle grown
    by ``gap``, default one voxel). Particles are cut by the region's boundary, as in a
    milled sample. The compound with the largest deficit is placed next, its size capped so
    as not to overshoot its target; particle
    "radius" (volume-equivalent) from ``radius_range`` (default 6-14 % of the smallest
    extent). Of the remaining matrix, a volume ``porosity`` (fraction of the region) becomes
    pores (label 0, ``pore_material``) and ``carbon_fraction`` of the rest carbon black,
    both from smooth random fields of correlation length ``pore_size`` (default 3 voxels).
    ``pillar=True`` limits the sample to a cylinder about y (tomography pillar) with vacuum
    outside. Placement stops after ``max_failures`` consecutive rejected particles (the
    maximum radius shrinks every 50 rejections); achieved fractions are in
    ``meta["fractions"]`` and may fall short of the targets when the volume is crowded.
    """
    shape, voxel = _shape3(shape), _voxel3(voxel_size)
    rng = np.random.default_rng(rng)
    fractions = dict(DEFAULT_CATHODE_FRACTIONS if fractions is None else fractions)
    total_frac = sum(fractions.values())
    if any(f < 0 for f in fractions.values()) or total_frac + porosity >= 1.0:
        raise PhysicsError(
            f"particle fractions {fractions} plus porosity {porosity} must be >= 0 and < 1"
        )
    ext = np.array(shape) * np.array(voxel)
    if radius_range is None:
        radius_range = (0.06 * ext.min(), 0.14 * ext.min())
    r_lo, r_hi = (float(v) for v in radius_range)
    if not 0 < r_lo <= r_hi:
        raise PhysicsError(f"radius_range must be 0 < low <= high, got {radius_range!r}")
    gap = max(voxel) if gap is None else float(gap)
    names = list(fractions)
    materials = [pore_material, binder, carbon, *names]
    label_of = {n: 3 + i for i, n in enumerate(names)}

    z, y, x = _coords(shape, voxel)
    if pillar:
        pr = 0.5 * min(ext[0], ext[2]) - max(voxel)
        region = np.broadcast_to(np.hypot(z, x) <= pr, shape)
    else:
        region = np.ones(shape, dtype=bool)
    n_region = int(region.sum())
    target = {n: fractions[n] * n_region for n in names}
    placed = {n: 0 for n in names}
    vox_vol = float(np.prod(voxel))

    labels = np.zeros(shape, dtype=np.uint8)
    blocked = np.zeros(shape, dtype=bool)  # particles grown by ``gap``: no new particle here
    done: set[str] = set()
    n_particles = 0
    min_vol = 4.0 / 3.0 * math.pi * r_lo**3 / vox_vol
    free = np.flatnonzero(region.ravel())
    fails = 0
    r_top = r_hi
    for _ in range(max_attempts):
        deficits = {n: target[n] - placed[n] for n in names if n not in done}
        if not deficits or len(free) == 0 or fails >= max_failures:
            break
        name = max(deficits, key=deficits.get)
        deficit_vox = deficits[name]
        if deficit_vox < 0.5 * min_vol:
            done.add(name)
            continue
        if fails and fails % 50 == 0:  # crowded: try smaller particles
            r_top = max(r_lo, 0.85 * r_top)
        r_cap = (deficit_vox * vox_vol * 3.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
        r = min(rng.uniform(r_lo, max(r_lo, r_top)), max(r_cap, r_lo))
        aspect = rng.uniform(*aspect_range)
        semi = r * np.array([aspect ** (2.0 / 3.0), aspect ** (-1.0 / 3.0), aspect ** (-1.0 / 3.0)])
        rot = _random_rotation(rng)
        # centre: a random free voxel (not inside an earlier particle's exclusion zone)
        idx = np.unravel_index(free[int(rng.integers(len(free)))], shape)
        c = (np.array(idx) - np.array([n // 2 for n in shape]) + rng.uniform(-0.5, 0.5, 3)) * (
            np.array(voxel)
        )
        bound = float(semi.max()) + gap
        sl, inside = _ellipsoid_in_box(shape, voxel, c, rot.T, semi, bound)
        inside &= region[sl]
        if not inside.any() or np.any(blocked[sl] & inside):
            fails += 1
            continue
        fails = 0
        _, grown = _ellipsoid_in_box(shape, voxel, c, rot.T, semi + gap, bound)
        blocked[sl] |= grown
        labels[sl][inside] = label_of[name]
        placed[name] += int(inside.sum())
        n_particles += 1
        free = np.flatnonzero((region & ~blocked).ravel())

    matrix = region & (labels == 0)
    n_matrix = int(matrix.sum())
    sigma = (3.0 * max(voxel) if pore_size is None else float(pore_size)) / np.array(voxel)
    labels[matrix] = 1  # binder
    n_pores = min(n_matrix, int(round(porosity * n_region)))
    if n_pores > 0:
        field_p = _smooth_noise(shape, sigma, rng)[matrix]
        order = np.argsort(field_p, kind="stable")
        idx = np.flatnonzero(matrix.ravel())
        labels.ravel()[idx[order[:n_pores]]] = 0
    rest = region & (labels == 1)
    n_rest = int(rest.sum())
    n_carbon = int(round(carbon_fraction * n_rest))
    if n_carbon > 0:
        field_c = _smooth_noise(shape, sigma, rng)[rest]
        order = np.argsort(field_c, kind="stable")
        idx = np.flatnonzero(rest.ravel())
        labels.ravel()[idx[order[:n_carbon]]] = 2
    counts = np.bincount(labels[region].ravel(), minlength=len(materials))
    achieved = {m: float(counts[i]) / n_region for i, m in enumerate(materials)}
    return Phantom(
        labels,
        materials,
        voxel_size,
        meta={
            "kind": "battery_cathode",
            "target_fractions": dict(fractions),
            "fractions": achieved,  # of the sample region (pillar or whole box)
            "n_particles": n_particles,
            "region_voxels": n_region,
        },
    )


# ---------------------------------------------------------------------------------------

PHANTOMS = {
    "siemens_star": siemens_star,
    "faceted_crystals": faceted_crystals,
    "hollow_cone": hollow_cone,
    "battery_cathode": battery_cathode,
}
_RANDOM = {"faceted_crystals", "battery_cathode"}


def make_phantom(name: str, shape, voxel_size, rng=None, **kwargs) -> Phantom:
    """Build phantom ``name`` from :data:`PHANTOMS`; ``rng`` goes to the random generators."""
    if name not in PHANTOMS:
        raise PhysicsError(f"unknown phantom {name!r}; known: {', '.join(PHANTOMS)}")
    if name in _RANDOM:
        kwargs["rng"] = rng
    return PHANTOMS[name](shape, voxel_size, **kwargs)
