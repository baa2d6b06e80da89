"""Deterministic sums of per-block partials over a fixed binary tree.

Work is split into ``n_blocks`` blocks whose boundaries do not depend on the number of
ranks. The total is the value of a fixed binary tree over the block indices (node
``[lo, hi)`` = node ``[lo, mid)`` + node ``[mid, hi)``, ``mid = (lo + hi) // 2``). A rank
owning a contiguous run of blocks evaluates the largest tree nodes inside its run (at most
about ``2 log2(n_blocks)``); then rank r finishes the tree for its segment r of the elements
(all-to-all of the nodes' segments), and the segments are all-gathered. Every
floating-point addition is therefore the same for any rank count:
results are bit-identical between 1, 2, ... ranks.

Partials are dicts of arrays (or one array); scalars (the loss) travel as float64. Leaves are
packed into one flat real buffer per (array module, real dtype), complex arrays as float
views.
"""

from __future__ import annotations

import numpy as np

from xrayflow.backend import array_module


def tree_cover(lo: int, hi: int, a: int, b: int) -> list[tuple[int, int]]:
    """Tree nodes of ``[lo, hi)`` that lie inside ``[a, b)`` and whose parent does not,
    left to right."""
    if b <= lo or hi <= a or lo >= hi:
        return []
    if a <= lo and hi <= b:
        return [(lo, hi)]
    mid = (lo + hi) // 2
    return tree_cover(lo, mid, a, b) + tree_cover(mid, hi, a, b)


class Layout:
    """How a partial (dict of arrays/scalars, or one array) maps onto flat real buffers.

    ``groups``: (array module name, real dtype) per buffer; ``entries``: per key (group,
    offset, count, dtype, shape, is_scalar). Picklable, so that ranks without blocks can
    take it from rank 0.
    """

    def __init__(self, single: bool, keys: list, groups: list, entries: list, sizes: list):
        self.single, self.keys, self.groups = single, keys, groups
        self.entries, self.sizes = entries, sizes

    @classmethod
    def of(cls, tree) -> Layout:
        single = not isinstance(tree, dict)
        items = {"": tree} if single else tree
        groups: list = []
        entries: list = []
        sizes: dict = {}
        for k, v in items.items():
            scalar = np.isscalar(v) or (isinstance(v, np.ndarray) and v.ndim == 0)
            xp = np if scalar else array_module(v)
            dt = np.dtype(np.float64) if scalar else np.dtype(v.dtype)
            if dt.kind not in "fc":
                raise TypeError(f"block_sum: {k or 'partial'} has non-float dtype {dt}")
            group = (xp.__name__, np.dtype(np.finfo(dt).dtype))
            if group not in sizes:
                sizes[group] = 0
                groups.append(group)
            shape = () if scalar else tuple(v.shape)
            count = int(np.prod(shape, dtype=np.int64)) * (2 if dt.kind == "c" else 1)
            entries.append((groups.index(group), sizes[group], count, dt, shape, scalar))
            sizes[group] += count
        return cls(single, list(items), groups, entries, [sizes[g] for g in groups])

    def describe(self) -> tuple:
        return (self.single, self.keys, self.groups, self.entries, self.sizes)

    def empty(self, xps: dict, lead: tuple = ()) -> list:
        """Uninitialised buffers ``lead + (size,)`` per group."""
        return [
            xps[g[0]].empty(lead + (n,), dtype=g[1])
            for g, n in zip(self.groups, self.sizes, strict=True)
        ]

    def pack(self, tree, out: list) -> list:
        items = {"": tree} if self.single else tree
        if list(items) != self.keys:
            raise ValueError(f"block_sum: partial keys {list(items)} differ from {self.keys}")
        for k, (g, off, cnt, dt, shape, scalar) in zip(self.keys, self.entries, strict=True):
            v = items[k]
            buf = out[g]
            if scalar:
                buf[off] = float(v)
                continue
            if tuple(v.shape) != shape or np.dtype(v.dtype) != dt:
                raise ValueError(
                    f"block_sum: {k or 'partial'} is {v.shape} {v.dtype}, expected {shape} {dt}"
                )
            xp = array_module(v)
            flat = xp.ascontiguousarray(v).reshape(-1)
            buf[off : off + cnt] = flat.view(buf.dtype) if dt.kind == "c" else flat
        return out

    def unpack(self, bufs: list):
        out = {}
        for k, (g, off, cnt, dt, shape, scalar) in zip(self.keys, self.entries, strict=True):
            seg = bufs[g][off : off + cnt]
            out[k] = float(seg[0]) if scalar else seg.view(dt).reshape(shape)
        return out[""] if self.single else out


def _add(acc: list, other: list) -> list:
    for a, b in zip(acc, other, strict=True):
        a += b
    return acc


def eval_node(lo: int, hi: int, known) -> list:
    """Value of tree node ``[lo, hi)``: ``known(lo, hi)`` returns buffers or None (then the
    node is the sum of its children, added in place into the left child's buffers)."""
    v = known(lo, hi)
    if v is not None:
        return v
    if hi - lo < 2:
        raise RuntimeError(f"block_sum: block {lo} was computed by no rank")
    mid = (lo + hi) // 2
    return _add(eval_node(lo, mid, known), eval_node(mid, hi, known))
