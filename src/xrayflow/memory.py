"""Memory guard: estimate a stage's peak memory before allocating, refuse if it won't fit.

Each stage adds up its large arrays from the config and the data file's header (object,
probe modes, frames, batches, ...) and calls :func:`check_memory` before it allocates any of
them. The limit is the memory available to this process — the smaller of the kernel's
``MemAvailable`` and the cgroup (container, Slurm job) limit less its current use, and for
a GPU run the device's free memory — or the configured ``max_memory_gb`` when that is
smaller. A refusal is a
:class:`~xrayflow.errors.ResourceError` (exit status 2) naming the estimate, its largest
parts and the limit, within milliseconds instead of a MemoryError after minutes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from xrayflow.errors import ResourceError

GiB = float(1 << 30)


def _meminfo_available() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_available() -> float | None:
    """cgroup v2 (``memory.max`` - ``memory.current``) or v1 limit of this process."""
    candidates = [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ]
    for lim_f, use_f in candidates:
        try:
            lim = Path(lim_f).read_text().strip()
            use = float(Path(use_f).read_text().strip())
        except (OSError, ValueError):
            continue
        if lim == "max" or float(lim) >= 1 << 60:
            return None
        return max(float(lim) - use, 0.0)
    return None


def available_bytes() -> float:
    """Bytes this process can still allocate without swapping (best estimate)."""
    found = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    if found:
        return min(found)
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return math.inf


def gpu_free_bytes() -> float | None:
    """Free memory of the current CUDA device (CuPy's ``memGetInfo``), None without one."""
    try:
        import cupy

        return float(cupy.cuda.runtime.memGetInfo()[0])
    except Exception:  # no CuPy, no device, no driver
        return None


def fmt_bytes(n: float) -> str:
    """``12.3 GiB`` / ``45.6 MiB`` (binary units)."""
    if n >= GiB:
        return f"{n / GiB:.3g} GiB"
    return f"{n / (1 << 20):.3g} MiB"


def check_memory(
    parts: Mapping[str, float],
    what: str,
    limit_gb: float | None = None,
    key: str = "",
    gpu: bool = False,
) -> float:
    """Refuse when the sum of ``parts`` (name -> bytes) exceeds the available memory.

    Args:
        parts: the large allocations, e.g. ``{"object (4, 8192, 8192) complex64": ...}``.
        what: the stage and device, e.g. ``"reconstruct"``.
        limit_gb: a configured limit (GiB), used when smaller than what is available.
        key: the config key of ``limit_gb`` to name in the message.
        gpu: the arrays live on the GPU too: the free device memory is a limit as well.

    Returns:
        The estimate in bytes.
    """
    total = float(sum(parts.values()))
    avail = available_bytes()
    limit, source = avail, "available memory"
    free_gpu = gpu_free_bytes() if gpu else None
    if free_gpu is not None and free_gpu < limit:
        limit, source = free_gpu, "free GPU memory"
    if limit_gb is not None and limit_gb * GiB < limit:
        limit, source = float(limit_gb) * GiB, key or "max_memory_gb"
    if total > limit:
        big = sorted(parts.items(), key=lambda kv: -kv[1])[:3]
        detail = ", ".join(f"{name} {fmt_bytes(b)}" for name, b in big)
        raise ResourceError(
            f"{what} needs about {fmt_bytes(total)} of memory ({detail}) but the limit is "
            f"{fmt_bytes(limit)} ({source}); reduce the sizes or run on a larger node"
        )
    return total
