"""Chunked HDF5 training shards and a streaming, shuffling, rank-aware torch IterableDataset.

Shard layout (one file per generation task, written atomically)::

    /inputs              (N, *in_shape)  float32  network input (the modality's measurement;
                                                  default sqrt(counts), centred)
    /views_<name>        (N, *view_shape) float32 further network inputs of the same samples
                                                  (e.g. Fourier–Bessel coefficients), attr views
    /targets_<name>      (N, *out_shape) float32  one per target of the modality, e.g.
                                                  targets_amplitude and targets_phase
    /<extra>             any                      the modality's extra datasets (e.g. probe)
    attrs: format="xrayflow-train-shard", format_version, kind (the modality, data.kind;
           train.hooks.training_hooks also reads the names of older shards),
           n_samples, chunk_rows, shard_index, n_shards, shard_uid, seed, targets (JSON list),
           views (JSON list, may be absent),
           noise_model, photons, centred, input_transform, config (JSON), provenance (JSON),
           plus the modality's layout attrs

All datasets are chunked along the sample axis by ``chunk_rows`` samples.

Streaming order (:class:`ShardDataset`) is a pure function of (seed, epoch, shard metadata):
the chunk list is permuted, cut into windows of ``shuffle_buffer`` samples, and the rows of a
window are permuted (a buffer shuffle computed on indices, so nothing is read to decide the
order). Global batches are consecutive runs of ``global_batch`` positions of this stream, the
same for any number of ranks; rank r takes positions ``[r·g, (r+1)·g)`` of every global batch
(g = global_batch / world_size), so ranks get disjoint samples and a run on W ranks sees the
same global batches as on 1 rank. Each rank reads only the rows it uses, window by window and
chunk by chunk: memory holds at most one window.

Value checks: every block of rows the reader streams (the rows ``lo:hi`` of one chunk that it
reads) is checked before it is used (two reductions per block, cheap beside a training
step): network inputs must be finite and non-negative (they are sqrt(counts) or another
non-negative measurement), targets and views finite; a complex dataset is refused from the
header. Rows in chunks that a run never reads (the dropped incomplete last global batch)
cannot affect its result and are not checked.
A bad value raises :class:`~xrayflow.errors.DataError` naming the file, the dataset and the
first bad row (:func:`check_block`), instead of a NaN model.

Held-out split: row j of a shard is held out iff ``u < val_fraction`` with ``u`` from
``default_rng([split_seed, crc32(shard_uid)])`` — deterministic, independent of rank count,
order and epoch, and disjoint from the training split by construction.
"""

from __future__ import annotations

import contextlib
import json
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from xrayflow.errors import DataError
from xrayflow.io.atomic import atomic_path

FORMAT = "xrayflow-train-shard"
FORMAT_VERSION = 1

__all__ = [
    "ShardDataset",
    "ShardWriter",
    "check_block",
    "list_shards",
    "read_shard",
    "shard_extras",
    "shard_info",
    "split_mask",
    "write_shard",
]


# ----------------------------------------------------------------------------- writing
class ShardWriter:
    """Write a shard incrementally (chunk by chunk) into a temporary file; rename on close.

    Example::

        with ShardWriter(path, n, (64, 64), {"amplitude": (64, 64), "phase": (64, 64)},
                         chunk_rows=32, attrs={...}) as w:
            w.write(0, inputs_block, {"amplitude": a, "phase": p})
    """

    def __init__(
        self,
        path,
        n_samples: int,
        input_shape: Sequence[int],
        target_shapes: dict[str, Sequence[int]],
        chunk_rows: int = 32,
        attrs: dict | None = None,
        compression: str | None = None,
        extras: dict[str, np.ndarray] | None = None,
        view_shapes: dict[str, Sequence[int]] | None = None,
    ):
        self.path = Path(path)
        self.n = int(n_samples)
        self.chunk_rows = max(1, min(int(chunk_rows), self.n))
        self.input_shape = tuple(input_shape)
        self.target_shapes = {k: tuple(v) for k, v in target_shapes.items()}
        self.attrs = dict(attrs or {})
        self.compression = compression
        self.extras = extras or {}
        self.view_shapes = {k: tuple(v) for k, v in (view_shapes or {}).items()}
        self._ctx = None
        self._f = None
        self._written = np.zeros(self.n, dtype=bool)

    def __enter__(self) -> ShardWriter:
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        try:
            f = h5py.File(tmp, "w")
            kw = {"compression": self.compression} if self.compression else {}
            f.create_dataset(
                "inputs",
                (self.n, *self.input_shape),
                "float32",
                chunks=(self.chunk_rows, *self.input_shape),
                **kw,
            )
            rows = {**{f"targets_{k}": v for k, v in self.target_shapes.items()}}
            rows.update({f"views_{k}": v for k, v in self.view_shapes.items()})
            for name, shp in rows.items():
                f.create_dataset(
                    name, (self.n, *shp), "float32", chunks=(self.chunk_rows, *shp), **kw
                )
            for k, v in self.extras.items():
                f.create_dataset(k, data=np.asarray(v))
            attrs = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "n_samples": self.n,
                "chunk_rows": self.chunk_rows,
                "targets": json.dumps(list(self.target_shapes)),
                **({"views": json.dumps(list(self.view_shapes))} if self.view_shapes else {}),
                **self.attrs,
            }
            for k, v in attrs.items():
                f.attrs[k] = json.dumps(v) if isinstance(v, dict | list | tuple) else v
            self._f = f
        except BaseException as exc:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def write(
        self,
        start: int,
        inputs: np.ndarray,
        targets: dict[str, np.ndarray],
        views: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Rows ``start:start + len(inputs)``: inputs, one array per target and per view."""
        stop = start + len(inputs)
        if stop > self.n:
            raise DataError(f"{self.path}: rows {start}:{stop} beyond n_samples {self.n}")
        self._f["inputs"][start:stop] = np.asarray(inputs, dtype=np.float32)
        for k in self.target_shapes:
            self._f[f"targets_{k}"][start:stop] = np.asarray(targets[k], dtype=np.float32)
        for k in self.view_shapes:
            self._f[f"views_{k}"][start:stop] = np.asarray((views or {})[k], dtype=np.float32)
        self._written[start:stop] = True

    def __exit__(self, et, ev, tb):
        with contextlib.suppress(Exception):
            self._f.close()
        if et is None and not self._written.all():
            err = DataError(
                f"{self.path}: only {int(self._written.sum())}/{self.n} rows were written"
            )
            self._ctx.__exit__(DataError, err, None)
            raise err
        self._ctx.__exit__(et, ev, tb)
        return False


def write_shard(
    path,
    inputs: np.ndarray,
    targets: dict[str, np.ndarray],
    attrs=None,
    chunk_rows: int = 32,
    compression: str | None = None,
    extras=None,
    views: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a whole shard from in-memory arrays (tests, small sets)."""
    inputs = np.asarray(inputs)
    views = {k: np.asarray(v) for k, v in (views or {}).items()}
    with ShardWriter(
        path,
        len(inputs),
        inputs.shape[1:],
        {k: np.asarray(v).shape[1:] for k, v in targets.items()},
        chunk_rows,
        attrs,
        compression,
        extras,
        {k: v.shape[1:] for k, v in views.items()},
    ) as w:
        for s in range(0, len(inputs), w.chunk_rows):
            e = min(s + w.chunk_rows, len(inputs))
            rows = {k: np.asarray(v)[s:e] for k, v in targets.items()}
            w.write(s, inputs[s:e], rows, {k: v[s:e] for k, v in views.items()})
    return Path(path)


# ----------------------------------------------------------------------------- checks
def check_block(
    block: np.ndarray,
    source: str,
    dataset: str,
    first_row: int | np.ndarray = 0,
    nonnegative: bool = True,
    unit: str = "row",
) -> None:
    """Raise :class:`DataError` if ``block`` (rows along axis 0) holds NaN/inf (or negative
    values when ``nonnegative``), naming ``source``, ``dataset`` and the first bad row.

    ``first_row``: the file row of ``block[0]`` (an int) or the file rows of all of them.
    The check is two reductions; the bad element is located only after a failure.
    """
    if block.size == 0:
        return
    if np.iscomplexobj(block):
        raise DataError(f"{source}: dataset {dataset!r} is complex; real values are required")
    lo, hi = block.min(), block.max()
    if (lo >= 0 if nonnegative else lo > -np.inf) and hi < np.inf:
        return
    flat = np.asarray(block).reshape(len(block), -1)
    bad = ~np.isfinite(flat)
    if nonnegative:
        bad |= flat < 0
    j = int(np.argmax(bad.any(axis=1)))
    k = int(np.argmax(bad[j]))
    v = float(flat[j, k])
    what = "NaN" if np.isnan(v) else ("inf" if np.isinf(v) else f"a negative value ({v:g})")
    rows = np.asarray(first_row)
    row = int(rows[j]) if rows.ndim else int(rows) + j
    index = tuple(int(i) for i in np.unravel_index(k, block.shape[1:]))
    need = "finite and non-negative" if nonnegative else "finite"
    raise DataError(
        f"{source}: dataset {dataset!r} {unit} {row} holds {what} at index {index} "
        f"({int(bad.sum())} bad value(s) in the {len(block)} {unit}s checked with it); "
        f"values must be {need}"
    )


def _check_dtype(p: Path, name: str, ds) -> None:
    kind = ds.dtype.kind
    if kind == "c":
        raise DataError(
            f"{str(p)!r}: dataset {name!r} is complex ({ds.dtype}); shards hold real float data"
        )
    if kind not in "fiu":
        raise DataError(f"{str(p)!r}: dataset {name!r} has non-numeric dtype {ds.dtype}")


# ----------------------------------------------------------------------------- reading
def _attr(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, str) and v[:1] in "[{":
        with contextlib.suppress(ValueError):
            return json.loads(v)
    return v


def shard_info(path) -> dict:
    """Metadata of one shard (attrs decoded, shapes), without reading any sample."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{str(p)!r}: shard does not exist")
    try:
        with h5py.File(p, "r") as f:
            attrs = {k: _attr(v) for k, v in f.attrs.items()}
            if attrs.get("format") != FORMAT or "inputs" not in f:
                raise DataError(f"{str(p)!r}: not an xrayflow training shard")
            targets = attrs.get("targets") or [
                k[len("targets_") :] for k in f if k.startswith("targets_")
            ]
            if not isinstance(targets, list) or any(f"targets_{t}" not in f for t in targets):
                raise DataError(f"{str(p)!r}: target datasets {targets!r} are missing")
            views = attrs.get("views") or []
            if not isinstance(views, list) or any(f"views_{v}" not in f for v in views):
                raise DataError(f"{str(p)!r}: view datasets {views!r} are missing")
            for name in (
                "inputs",
                *(f"targets_{t}" for t in targets),
                *(f"views_{v}" for v in views),
            ):
                _check_dtype(p, name, f[name])
            info = {
                "path": str(p),
                "n_samples": int(f["inputs"].shape[0]),
                "input_shape": tuple(f["inputs"].shape[1:]),
                "target_shapes": {t: tuple(f[f"targets_{t}"].shape[1:]) for t in targets},
                "view_shapes": {v: tuple(f[f"views_{v}"].shape[1:]) for v in views},
                "chunk_rows": int((f["inputs"].chunks or (f["inputs"].shape[0],))[0]),
                "attrs": attrs,
            }
    except OSError as exc:
        raise DataError(f"{str(p)!r}: unreadable shard (truncated or corrupt?): {exc}") from None
    info["uid"] = str(attrs.get("shard_uid", p.name))
    return info


def read_shard(path, rows=None) -> dict:
    """Read rows (default all) of a shard into memory: ``{"inputs": ..., "<target>": ...,
    "<view>": ...}``."""
    info = shard_info(path)
    sel = slice(None) if rows is None else np.asarray(rows)
    with h5py.File(path, "r") as f:
        out = {"inputs": f["inputs"][sel]}
        for t in info["target_shapes"]:
            out[t] = f[f"targets_{t}"][sel]
        for v in info["view_shapes"]:
            out[v] = f[f"views_{v}"][sel]
    return out


def list_shards(data) -> list[Path]:
    """Shard files from a directory (its ``manifest.json``, else ``*.h5`` sorted), a manifest
    JSON, a file, or a list of these."""
    if isinstance(data, list | tuple):
        out: list[Path] = []
        for d in data:
            out += list_shards(d)
        return out
    p = Path(data)
    if p.is_dir() and (p / "manifest.json").is_file():
        return list_shards(p / "manifest.json")
    if p.is_dir():
        files = sorted(x for x in p.glob("*.h5") if not x.name.startswith("."))
    elif p.suffix == ".json" and p.is_file():
        try:
            man = json.loads(p.read_text())
            files = [
                p.parent / s["path"] if isinstance(s, dict) else p.parent / s for s in man["shards"]
            ]
        except (ValueError, KeyError, TypeError) as exc:
            what = f"no key {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
            raise DataError(f"{str(p)!r}: not a valid shard manifest ({what})") from None
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{str(p)!r}: lists shard {missing[0]!r}, which does not exist")
    elif p.is_file():
        files = [p]
    else:
        raise DataError(f"{str(p)!r}: no such shard file, directory or manifest")
    if not files:
        raise DataError(f"{str(p)!r}: no shards (*.h5) found")
    return files


def split_mask(uid: str, n: int, val_fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out rows of a shard (deterministic from uid and seed)."""
    if val_fraction <= 0:
        return np.zeros(n, dtype=bool)
    rng = np.random.default_rng([int(seed), zlib.crc32(uid.encode())])
    return rng.random(n) < val_fraction


class ShardDataset(IterableDataset):
    """Stream samples from shards: buffer shuffle, held-out split, rank and worker splitting.

    Args:
        paths: shard paths (see :func:`list_shards`).
        split: ``"train"`` | ``"val"`` | ``"all"``.
        val_fraction, split_seed: held-out split (see module docstring).
        seed: shuffle seed; the order of epoch e is a function of (seed, e) only.
        shuffle: permute chunks and rows within windows of ``shuffle_buffer`` samples.
        global_batch: samples per global batch; rank r of W takes its ``global_batch / W``
            consecutive positions of every global batch. ``drop_last`` (default: True for
            "train") drops the final incomplete global batch so every rank gets equal batches.
            Without drop_last (evaluation) position p goes to rank ``p % W``.
        rank, world_size: default from torch.distributed when initialised, else 0 / 1.

    Each item is a dict of float32 tensors: ``input``, one entry per target and one per view
    (further inputs, e.g. Fourier–Bessel coefficients), plus ``sid``
    (int64: shard index · 2^32 + row) identifying the sample.
    """

    def __init__(
        self,
        paths,
        split: str = "train",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 1024,
        global_batch: int = 32,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool | None = None,
    ):
        super().__init__()
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be train | val | all, got {split!r}")
        self.paths = [str(p) for p in list_shards(paths)]
        self.infos = [shard_info(p) for p in self.paths]
        shapes = {
            (
                i["input_shape"],
                tuple(sorted(i["target_shapes"].items())),
                tuple(sorted(i["view_shapes"].items())),
            )
            for i in self.infos
        }
        if len(shapes) > 1:
            raise DataError(f"shards disagree on input/target/view shapes: {sorted(shapes)}")
        self.split, self.val_fraction, self.split_seed = split, float(val_fraction), split_seed
        self.seed, self.shuffle, self.shuffle_buffer = int(seed), bool(shuffle), int(shuffle_buffer)
        if rank is None or world_size is None:
            if dist.is_available() and dist.is_initialized():
                rank, world_size = dist.get_rank(), dist.get_world_size()
            else:
                rank, world_size = 0, 1
        self.rank, self.world_size = int(rank), int(world_size)
        self.global_batch = int(global_batch)
        if self.global_batch % self.world_size:
            raise ValueError(
                f"global batch {self.global_batch} is not divisible by {self.world_size} ranks"
            )
        self.local_batch = self.global_batch // self.world_size
        self.drop_last = (split == "train") if drop_last is None else bool(drop_last)
        self.epoch = 0
        self.start_batch = 0
        self._masks = [self._mask(i) for i in range(len(self.infos))]
        self.n_split = int(sum(m.sum() for m in self._masks))

    # ------------------------------------------------------------------ metadata
    @property
    def input_shape(self) -> tuple:
        return self.infos[0]["input_shape"]

    @property
    def target_names(self) -> list[str]:
        return list(self.infos[0]["target_shapes"])

    @property
    def view_names(self) -> list[str]:
        return list(self.infos[0]["view_shapes"])

    def _mask(self, i: int) -> np.ndarray:
        info = self.infos[i]
        held = split_mask(info["uid"], info["n_samples"], self.val_fraction, self.split_seed)
        if self.split == "val":
            return held
        if self.split == "train":
            return ~held
        return np.ones(info["n_samples"], dtype=bool)

    def n_global_batches(self) -> int:
        full, rest = divmod(self.n_split, self.global_batch)
        return full if self.drop_last else full + (rest > 0)

    def n_local_samples(self) -> int:
        if self.drop_last:
            return self.n_global_batches() * self.local_batch
        n = self.n_split
        return n // self.world_size + (self.rank < n % self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start_batch(self, k: int) -> None:
        """Skip the first k global batches of the epoch (mid-epoch resume) without reading."""
        self.start_batch = int(k)

    # ------------------------------------------------------------------ order
    def _chunks(self) -> list[tuple[int, int, int]]:
        out = []
        for i, info in enumerate(self.infos):
            c = info["chunk_rows"]
            for s in range(0, info["n_samples"], c):
                out.append((i, s, min(s + c, info["n_samples"])))
        return out

    def windows(self, epoch: int | None = None) -> Iterator[np.ndarray]:
        """The epoch's global order, window by window: arrays of (shard, row) pairs."""
        epoch = self.epoch if epoch is None else epoch
        chunks = self._chunks()
        rng = np.random.default_rng([self.seed, epoch, 0x5EED])
        if self.shuffle:
            chunks = [chunks[j] for j in rng.permutation(len(chunks))]
        win: list[np.ndarray] = []
        size = 0
        for shard, s, e in chunks:
            rows = np.arange(s, e)[self._masks[shard][s:e]]
            if len(rows):
                win.append(np.stack([np.full(len(rows), shard), rows], axis=1))
                size += len(rows)
            if size >= self.shuffle_buffer:
                yield self._close(win, rng)
                win, size = [], 0
        if win:
            yield self._close(win, rng)

    def _close(self, win, rng) -> np.ndarray:
        w = np.concatenate(win)
        return w[rng.permutation(len(w))] if self.shuffle else w

    def _mine(self, pos: np.ndarray) -> np.ndarray:
        """Boolean: which global positions belong to this rank."""
        if self.drop_last:
            limit = self.n_global_batches() * self.global_batch
            sel = (pos % self.global_batch) // self.local_batch == self.rank
            return sel & (pos < limit) & (pos >= self.start_batch * self.global_batch)
        return (pos % self.world_size == self.rank) & (pos >= self.start_batch * self.global_batch)

    def local_order(self, epoch: int | None = None) -> np.ndarray:
        """All (shard, row) pairs this rank yields in the epoch, in order (tests, debugging)."""
        out, p0 = [], 0
        for w in self.windows(epoch):
            pos = np.arange(p0, p0 + len(w))
            out.append(w[self._mine(pos)])
            p0 += len(w)
        return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[dict]:
        wi = get_worker_info()
        n_workers, worker = (1, 0) if wi is None else (wi.num_workers, wi.id)
        files: dict[int, h5py.File] = {}
        names = self.target_names
        try:
            p0 = 0
            local_i = self.start_batch * self.local_batch if self.drop_last else 0
            for w in self.windows():
                pos = np.arange(p0, p0 + len(w))
                p0 += len(w)
                mine = w[self._mine(pos)]
                if not len(mine):
                    continue
                lb = (local_i + np.arange(len(mine))) // self.local_batch
                local_i += len(mine)
                if n_workers > 1:
                    mine = mine[lb % n_workers == worker]
                if not len(mine):
                    continue
                data = self._read(files, mine, names)
                for j in range(len(mine)):
                    item = {k: torch.from_numpy(v[j]) for k, v in data.items()}
                    item["sid"] = torch.tensor(int(mine[j, 0]) << 32 | int(mine[j, 1]))
                    yield item
        finally:
            for f in files.values():
                with contextlib.suppress(Exception):
                    f.close()

    def _read(self, files, pairs: np.ndarray, names) -> dict[str, np.ndarray]:
        """Read the given (shard, row) pairs chunk by chunk, returned in the given order."""
        n = len(pairs)
        out = {"input": np.empty((n, *self.input_shape), np.float32)}
        shp = self.infos[0]["target_shapes"]
        for t in names:
            out[t] = np.empty((n, *shp[t]), np.float32)
        views = self.infos[0]["view_shapes"]
        for v, vshape in views.items():
            out[v] = np.empty((n, *vshape), np.float32)
        keys = pairs[:, 0] * (1 << 32) + pairs[:, 1]
        order = np.argsort(keys, kind="stable")
        sp = pairs[order]
        # group by (shard, chunk) and read one contiguous hyperslab per group
        chunk_of = sp[:, 1] // np.array([self.infos[s]["chunk_rows"] for s in sp[:, 0]])
        grp = np.flatnonzero(np.r_[True, (np.diff(sp[:, 0]) != 0) | (np.diff(chunk_of) != 0)])
        bounds = np.r_[grp, len(sp)]
        for a, b in zip(bounds[:-1], bounds[1:], strict=False):
            shard = int(sp[a, 0])
            if shard not in files:
                try:
                    files[shard] = h5py.File(self.paths[shard], "r")
                except OSError as exc:
                    raise DataError(f"{self.paths[shard]!r}: unreadable shard: {exc}") from None
            f = files[shard]
            rows = sp[a:b, 1]
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            dst = order[a:b]
            src = self.paths[shard]
            try:
                # the whole hyperslab read (rows lo:hi of one chunk) is checked
                x = f["inputs"][lo:hi]
                check_block(x, repr(src), "inputs", lo, nonnegative=True)
                out["input"][dst] = x[rows - lo]
                for key, ds in [(t, f"targets_{t}") for t in names] + [
                    (v, f"views_{v}") for v in views
                ]:
                    y = f[ds][lo:hi]
                    check_block(y, repr(src), ds, lo, nonnegative=False)
                    out[key][dst] = y[rows - lo]
            except (OSError, RuntimeError) as exc:  # h5py: truncated or corrupt chunk
                raise DataError(
                    f"{src!r}: cannot read rows {lo}:{hi} (truncated or corrupt?): {exc}"
                ) from None
        return out


def shard_extras(path, name: str):
    """An extra dataset of a shard (e.g. ``probe``), or None."""
    with h5py.File(path, "r") as f:
        return f[name][()] if name in f else None
