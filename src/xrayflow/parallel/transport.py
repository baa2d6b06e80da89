"""How arrays move between ranks: MPI on host arrays; NCCL, CUDA-aware MPI or host staging
for CuPy arrays.

All buffers handed to a transport are contiguous and *real* (complex data travel as float
views with twice the count: NCCL has no complex types). Only blocking collectives are used
(mpi4py's non-blocking ones on GPU buffers have segfaulted, mpi4py#164).

The GPU transport is chosen once per communicator: ``XRAYFLOW_GPU_COMM`` (``nccl`` |
``cuda-aware-mpi`` | ``host``) forces one; otherwise NCCL when ``cupy.cuda.nccl`` imports,
else CUDA-aware MPI when the MPI library says so (``MPI.Query_cuda_support``, or
``MPICH_GPU_SUPPORT_ENABLED=1`` / ``OMPI_MCA_opal_cuda_support=true``), else host staging.
"""

from __future__ import annotations

import os

import numpy as np

GPU_TRANSPORTS = ("nccl", "cuda-aware-mpi", "host")


def displacements(counts) -> list[int]:
    """Offsets of consecutive segments of ``counts`` elements."""
    return [int(v) for v in np.concatenate([[0], np.cumsum(counts)[:-1]])]


class SerialTransport:
    """One rank: every collective is a copy (or nothing)."""

    name = "serial"

    def allreduce(self, buf):
        return buf

    def alltoallv(self, send, scounts, recv, rcounts):
        recv[...] = send
        return recv

    def allgatherv(self, send, recv, counts):
        recv[...] = send
        return recv


class MPITransport:
    """Host (NumPy) buffers through mpi4py's buffer interface (counts in elements)."""

    name = "mpi"

    def __init__(self, comm):
        self.comm = comm

    def allreduce(self, buf):
        from mpi4py import MPI

        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return buf

    def alltoallv(self, send, scounts, recv, rcounts):
        """``send`` holds consecutive segments for ranks 0, 1, ... (``scounts``); ``recv``
        receives the segments from ranks 0, 1, ... (``rcounts``)."""
        self.comm.Alltoallv(
            [send, (list(scounts), displacements(scounts))],
            [recv, (list(rcounts), displacements(rcounts))],
        )
        return recv

    def allgatherv(self, send, recv, counts):
        self.comm.Allgatherv(send, [recv, (list(counts), displacements(counts))])
        return recv


class CudaAwareMPITransport(MPITransport):
    """CuPy buffers passed to MPI directly (``__cuda_array_interface__``). MPI is not
    stream-aware: the current stream is synchronised before every call."""

    name = "cuda-aware-mpi"

    def allreduce(self, buf):
        _sync()
        return super().allreduce(buf)

    def alltoallv(self, send, scounts, recv, rcounts):
        _sync()
        return super().alltoallv(send, scounts, recv, rcounts)

    def allgatherv(self, send, recv, counts):
        _sync()
        return super().allgatherv(send, recv, counts)


class HostStagingTransport(MPITransport):
    """CuPy buffers copied to the host, exchanged with MPI, copied back (always works)."""

    name = "host"

    def allreduce(self, buf):
        h = buf.get()  # synchronises the stream
        super().allreduce(h)
        buf.set(h)
        return buf

    def alltoallv(self, send, scounts, recv, rcounts):
        h = np.empty(recv.shape, dtype=recv.dtype)
        super().alltoallv(send.get(), scounts, h, rcounts)
        recv.set(h)
        return recv

    def allgatherv(self, send, recv, counts):
        h = np.empty(recv.shape, dtype=recv.dtype)
        super().allgatherv(send.get(), h, counts)
        recv.set(h)
        return recv


class NCCLTransport:
    """NCCL collectives on the current CuPy stream (stream-ordered: no host sync).

    The unique id is made on rank 0 and broadcast with mpi4py; creating the NCCL
    communicator is collective, so every rank must reach the first GPU reduction. The
    ``v`` collectives are grouped point-to-point sends/receives (NCCL >= 2.7).
    """

    name = "nccl"

    def __init__(self, comm):
        from cupy.cuda import nccl

        self.nccl = nccl
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = comm.bcast(uid, root=0)
        self.nc = nccl.NcclCommunicator(self.size, uid, self.rank)

    def _dtype(self, dt):
        codes = {
            np.dtype(np.float32): self.nccl.NCCL_FLOAT32,
            np.dtype(np.float64): self.nccl.NCCL_FLOAT64,
        }
        if np.dtype(dt) not in codes:
            raise TypeError(f"NCCL transport: unsupported dtype {dt} (real float32/64 only)")
        return codes[np.dtype(dt)]

    def allreduce(self, buf):
        self.nc.allReduce(
            buf.data.ptr,
            buf.data.ptr,
            buf.size,
            self._dtype(buf.dtype),
            self.nccl.NCCL_SUM,
            _stream(),
        )
        return buf

    def _exchange(self, send_parts, recv_parts, dt):
        """Grouped send/recv: ``send_parts[p]`` / ``recv_parts[p]`` = (pointer, count)."""
        stream = _stream()
        self.nccl.groupStart()
        for peer in range(self.size):
            (sp, sc), (rp, rc) = send_parts[peer], recv_parts[peer]
            if sc:
                self.nc.send(sp, sc, dt, peer, stream)
            if rc:
                self.nc.recv(rp, rc, dt, peer, stream)
        self.nccl.groupEnd()

    def alltoallv(self, send, scounts, recv, rcounts):
        it = send.itemsize
        so, ro = displacements(scounts), displacements(rcounts)
        self._exchange(
            [(send.data.ptr + so[p] * it, int(scounts[p])) for p in range(self.size)],
            [(recv.data.ptr + ro[p] * it, int(rcounts[p])) for p in range(self.size)],
            self._dtype(send.dtype),
        )
        return recv

    def allgatherv(self, send, recv, counts):
        it = send.itemsize
        ro = displacements(counts)
        mine = (send.data.ptr, int(counts[self.rank]))
        self._exchange(
            [mine] * self.size,
            [(recv.data.ptr + ro[p] * it, int(counts[p])) for p in range(self.size)],
            self._dtype(send.dtype),
        )
        return recv


def _stream() -> int:
    import cupy

    return cupy.cuda.get_current_stream().ptr


def _sync() -> None:
    import cupy

    cupy.cuda.get_current_stream().synchronize()


def _nccl_available() -> bool:
    try:
        from cupy.cuda import nccl  # noqa: F401
    except Exception:
        return False
    return True


def _cuda_aware_mpi() -> bool:
    from mpi4py import MPI

    query = getattr(MPI, "Query_cuda_support", None)
    if query is not None:
        try:
            return bool(query())
        except Exception:
            return False
    return (
        os.environ.get("MPICH_GPU_SUPPORT_ENABLED") == "1"
        or os.environ.get("OMPI_MCA_opal_cuda_support", "").lower() == "true"
    )


def gpu_transport_name() -> str:
    """Which GPU transport this process would use (see the module docstring)."""
    forced = os.environ.get("XRAYFLOW_GPU_COMM")
    if forced:
        if forced not in GPU_TRANSPORTS:
            raise ValueError(f"XRAYFLOW_GPU_COMM must be one of {GPU_TRANSPORTS}, got {forced!r}")
        return forced
    if _nccl_available():
        return "nccl"
    if _cuda_aware_mpi():
        return "cuda-aware-mpi"
    return "host"


def make_gpu_transport(comm, name: str):
    """The GPU transport called ``name`` on the mpi4py communicator ``comm``."""
    kinds = {
        "nccl": NCCLTransport,
        "cuda-aware-mpi": CudaAwareMPITransport,
        "host": HostStagingTransport,
    }
    return kinds[name](comm)
