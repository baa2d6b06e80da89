"""Fused multislice primitive: finite differences, torch, reversible vs stored mode."""

import numpy as np
import pytest
from ad_testutil import crandn, fd_grad, rel_err

from xrayflow import ad

torch = pytest.importorskip("torch")


def _setup(S=3, B=4, M=2, n=6, seed=0, absorbing=None):
    rng = np.random.default_rng(seed)
    probe = crandn(rng, M, n, n)
    phase = 0.5 * rng.standard_normal((S, B, n, n))
    absorb = 0.1 * rng.random((S, B, n, n))
    if absorbing is not None:
        absorb[absorbing] += 6.0  # |t| ~ exp(-6): strongly absorbing slice
    patches = np.exp(1j * phase - absorb)
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    H = np.exp(-1j * np.pi * 2.3 * (fx**2 + fy**2))
    amp = np.abs(crandn(rng, B, n, n))
    return probe, patches, H, amp


def _loss_ad(H, amp, reversible=True, chunk=None, record=None):
    def loss(probe, patches):
        psi = ad.multislice(probe, patches, H, reversible=reversible, chunk=chunk, _record=record)
        inten = ad.sum(ad.abs2(ad.fft2(psi)), axis=1)  # sum over modes
        return ad.sum((ad.sqrt(inten) - amp) ** 2)

    return loss


def _loss_torch(probe, patches, H, amp):
    Ht = torch.from_numpy(H)
    psi = probe[None]
    S = patches.shape[0]
    for j in range(S):
        psi = psi * patches[j][:, None]
        if j < S - 1:
            psi = torch.fft.ifft2(torch.fft.fft2(psi, norm="ortho") * Ht, norm="ortho")
    F = torch.fft.fft2(psi, norm="ortho")
    inten = (F.real**2 + F.imag**2).sum(dim=1)
    return ((torch.sqrt(inten) - torch.from_numpy(amp)) ** 2).sum()


def test_multislice_forward_matches_loop():
    probe, patches, H, _ = _setup()
    y = ad.multislice(probe, patches, H).data
    psi = np.broadcast_to(probe[None], (4,) + probe.shape)
    for j in range(3):
        psi = psi * patches[j][:, None]
        if j < 2:
            psi = np.fft.ifft2(np.fft.fft2(psi) * H)
    np.testing.assert_allclose(y, psi, atol=1e-12)


def test_multislice_loss_vs_finite_differences():
    probe, patches, H, amp = _setup(S=3, B=2, M=2, n=4)
    loss = _loss_ad(H, amp)
    _, (gp, gt) = ad.value_and_grad(loss, (0, 1))(probe, patches)
    fp = fd_grad(lambda p: float(loss(p, patches).data), probe)
    ft = fd_grad(lambda t: float(loss(probe, t).data), patches)
    assert rel_err(gp, fp) < 1e-6
    assert rel_err(gt, ft) < 1e-6


@pytest.mark.parametrize("reversible", [True, False])
def test_multislice_loss_vs_torch(reversible):
    probe, patches, H, amp = _setup(S=4, B=5, M=2, n=8)
    val, (gp, gt) = ad.value_and_grad(_loss_ad(H, amp, reversible, chunk=2), (0, 1))(probe, patches)
    tp = torch.tensor(probe, requires_grad=True)
    tt = torch.tensor(patches, requires_grad=True)
    tl = _loss_torch(tp, tt, H, amp)
    tl.backward()
    assert abs(val - tl.item()) < 1e-10 * abs(tl.item())
    assert rel_err(gp, tp.grad.numpy()) < 1e-10
    assert rel_err(gt, tt.grad.numpy()) < 1e-10


@pytest.mark.parametrize("M", [1, 3])
def test_reversible_equals_stored(M):
    probe, patches, H, amp = _setup(S=6, B=5, M=M, n=8, seed=3)
    rec_r, rec_s = [], []
    _, gr = ad.value_and_grad(_loss_ad(H, amp, True, chunk=2, record=rec_r), (0, 1))(probe, patches)
    _, gs = ad.value_and_grad(_loss_ad(H, amp, False, chunk=2, record=rec_s), (0, 1))(
        probe, patches
    )
    for a, b in zip(gr, gs, strict=True):
        assert rel_err(a, b) < 1e-10
    # regenerated incident waves equal the stored ones
    assert len(rec_r) == len(rec_s) > 0
    assert all(src == "regenerated" for *_, src, _ in rec_r)
    assert all(src == "stored" for *_, src, _ in rec_s)
    for (j, b0, b1, _, pr), (j2, c0, c1, _, ps) in zip(rec_r, rec_s, strict=True):
        assert (j, b0, b1) == (j2, c0, c1)
        assert rel_err(pr, ps) < 1e-10


def test_absorbing_slice_falls_back_to_checkpoint():
    probe, patches, H, amp = _setup(S=5, B=3, M=1, n=8, seed=5, absorbing=2)
    rec = []
    _, gr = ad.value_and_grad(_loss_ad(H, amp, True, record=rec), (0, 1))(probe, patches)
    _, gs = ad.value_and_grad(_loss_ad(H, amp, False), (0, 1))(probe, patches)
    srcs = {j: src for j, _, _, src, _ in rec}
    assert srcs[2] == "stored" and srcs[4] == "regenerated" and srcs[3] == "regenerated"
    for a, b in zip(gr, gs, strict=True):
        assert rel_err(a, b) < 1e-10


def test_non_unitary_propagator_checkpoints():
    probe, patches, _, amp = _setup(S=4, B=3, M=1, n=8, seed=7)
    fy = np.fft.fftfreq(8)[:, None]
    fx = np.fft.fftfreq(8)[None, :]
    H = np.exp(-1j * np.pi * 2.3 * (fx**2 + fy**2)) * ((fx**2 + fy**2) < 0.15)  # band limit
    rec = []
    _, gr = ad.value_and_grad(_loss_ad(H, amp, True, record=rec), (0, 1))(probe, patches)
    _, gs = ad.value_and_grad(_loss_ad(H, amp, False), (0, 1))(probe, patches)
    # the last incident wave only needs a division (no propagator inverse)
    srcs = {j: src for j, _, _, src, _ in rec}
    assert srcs == {3: "regenerated", 2: "stored", 1: "stored"}
    for a, b in zip(gr, gs, strict=True):
        assert rel_err(a, b) < 1e-10


def test_per_slice_transfer_and_single_slice():
    probe, patches, H, amp = _setup(S=3, B=3, M=1, n=6, seed=9)
    Hs = np.stack([H, H.conj()])
    _, gr = ad.value_and_grad(_loss_ad(Hs, amp, True), (0, 1))(probe, patches)
    tp = torch.tensor(probe, requires_grad=True)
    tt = torch.tensor(patches, requires_grad=True)
    psi = tp[None]
    for j in range(3):
        psi = psi * tt[j][:, None]
        if j < 2:
            psi = torch.fft.ifft2(
                torch.fft.fft2(psi, norm="ortho") * torch.from_numpy(Hs[j]), norm="ortho"
            )
    F = torch.fft.fft2(psi, norm="ortho")
    ((torch.sqrt((F.abs() ** 2).sum(1)) - torch.from_numpy(amp)) ** 2).sum().backward()
    assert rel_err(gr[0], tp.grad.numpy()) < 1e-10
    assert rel_err(gr[1], tt.grad.numpy()) < 1e-10
    # one slice: no transfer needed
    _, g1 = ad.value_and_grad(_loss_ad(None, amp, True), (0, 1))(probe, patches[:1])
    _, g2 = ad.value_and_grad(_loss_ad(None, amp, False), (0, 1))(probe, patches[:1])
    assert rel_err(g1[1], g2[1]) < 1e-12


@pytest.mark.parametrize("reversible", [True, False])
def test_multislice_object_equals_gather_then_multislice(reversible):
    rng = np.random.default_rng(11)
    S, B, M, n = 3, 6, 2, 8
    obj = np.exp(1j * 0.4 * rng.standard_normal((S, 20, 22)))
    corners = rng.integers(0, 12, (B, 2))
    probe, _, H, _ = _setup(S=S, B=B, M=M, n=n)
    amp = np.abs(crandn(rng, B, M, n, n))

    def f_obj(p, o):
        psi = ad.multislice_object(p, o, corners, H, reversible=reversible, chunk=4)
        return ad.sum((ad.abs(ad.fft2(psi)) - amp) ** 2)

    def f_ref(p, o):
        psi = ad.multislice(p, ad.gather_patches(o, corners, (n, n)), H, reversible=False)
        return ad.sum((ad.abs(ad.fft2(psi)) - amp) ** 2)

    va, ga = ad.value_and_grad(f_obj, (0, 1))(probe, obj)
    vb, gb = ad.value_and_grad(f_ref, (0, 1))(probe, obj)
    assert abs(va - vb) < 1e-12 * vb
    for a, b in zip(ga, gb, strict=True):
        assert rel_err(a, b) < 1e-10


def test_complex64_reversible_close_to_stored():
    probe, patches, H, amp = _setup(S=10, B=4, M=1, n=16, seed=4)
    probe = probe.astype(np.complex64)
    patches = patches.astype(np.complex64)
    _, gr = ad.value_and_grad(_loss_ad(H, amp, True), (0, 1))(probe, patches)
    _, gs = ad.value_and_grad(_loss_ad(H, amp, False), (0, 1))(probe, patches)
    assert gr[0].dtype == np.complex64 and gr[1].dtype == np.complex64
    for a, b in zip(gr, gs, strict=True):
        assert rel_err(a, b) < 1e-4


def test_reversible_backward_memory_below_stored():
    import tracemalloc

    rng = np.random.default_rng(21)
    S, B, n = 8, 16, 32
    obj = np.exp(1j * 0.3 * rng.standard_normal((S, 60, 60)))
    corners = rng.integers(0, 28, (B, 2))
    probe, _, H, _ = _setup(S=S, B=B, M=1, n=n)
    amp = rng.random((B, n, n))

    def make(reversible):
        def loss(p, o):
            psi = ad.multislice_object(p, o, corners, H, reversible=reversible)
            return ad.sum((ad.sqrt(ad.far_field_intensity(psi) + 1e-3) - amp) ** 2)

        return loss

    peaks = {}
    for name, rev in (("rev", True), ("sto", False)):
        tracemalloc.start()
        ad.value_and_grad(make(rev), (0, 1))(probe, obj)
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    tracemalloc.start()
    make(True)(probe, obj)
    peaks["fwd"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    unit = B * n * n * 16
    assert peaks["sto"] - peaks["rev"] > (S - 3) * unit  # S-1 stored wave batches saved
    assert peaks["rev"] < 2.0 * peaks["fwd"]


@pytest.mark.parametrize("reversible", [True, False])
def test_threaded_chunks_bitwise_equal_to_one_thread(reversible):
    """Chunks on 3 worker threads (FFTs then single-threaded) give bit-identical values and
    gradients to one thread: overlapping patch gradients are scatter-added in chunk order."""
    from xrayflow.backend import get_backend

    rng = np.random.default_rng(31)
    S, B, M, n = 4, 7, 2, 8
    obj = np.exp(1j * 0.4 * rng.standard_normal((S, 14, 14)))
    corners = rng.integers(0, 6, (B, 2))  # heavily overlapping
    probe, _, H, _ = _setup(S=S, B=B, M=M, n=n)
    amp = rng.random((B, n, n))

    def grads(workers):
        be = get_backend("cpu", "double", workers=workers)

        def loss(p, o):
            psi = ad.multislice_object(p, o, corners, H, be, reversible=reversible, chunk=2)
            return ad.sum((ad.sqrt(ad.far_field_intensity(psi, backend=be) + 0.1) - amp) ** 2)

        return ad.value_and_grad(loss, (0, 1))(probe, obj)

    v1, (gp1, go1) = grads(1)
    v3, (gp3, go3) = grads(3)
    assert v1 == v3
    assert np.array_equal(gp1, gp3) and np.array_equal(go1, go3)
    assert np.abs(go1).max() > 0 and np.abs(gp1).max() > 0


@pytest.mark.parametrize("reversible", [True, False])
def test_per_position_probes_vs_torch(reversible):
    """probe (B, M, n, n): each position has its own (e.g. sub-pixel shifted) probe."""
    _, patches, H, amp = _setup(S=3, B=5, M=2, n=8, seed=13)
    rng = np.random.default_rng(14)
    probes = crandn(rng, 5, 2, 8, 8)
    val, (gp, gt) = ad.value_and_grad(_loss_ad(H, amp, reversible, chunk=2), (0, 1))(
        probes, patches
    )
    tp = torch.tensor(probes, requires_grad=True)
    tt = torch.tensor(patches, requires_grad=True)
    Ht = torch.from_numpy(H)
    psi = tp
    for j in range(3):
        psi = psi * tt[j][:, None]
        if j < 2:
            psi = torch.fft.ifft2(torch.fft.fft2(psi, norm="ortho") * Ht, norm="ortho")
    F = torch.fft.fft2(psi, norm="ortho")
    tl = ((torch.sqrt((F.real**2 + F.imag**2).sum(1)) - torch.from_numpy(amp)) ** 2).sum()
    tl.backward()
    assert gp.shape == probes.shape
    assert abs(val - tl.item()) < 1e-10 * abs(tl.item())
    assert rel_err(gp, tp.grad.numpy()) < 1e-10
    assert rel_err(gt, tt.grad.numpy()) < 1e-10
    # the object API agrees; a wrong number of probes is refused
    obj = np.exp(1j * 0.4 * rng.standard_normal((3, 12, 12)))
    corners = rng.integers(0, 4, (5, 2))

    def f(p, o, api):
        if api == "object":
            psi = ad.multislice_object(p, o, corners, H, reversible=reversible, chunk=2)
        else:
            psi = ad.multislice(p, ad.gather_patches(o, corners, 8), H, reversible=reversible)
        return ad.sum(ad.sqrt(ad.far_field_intensity(psi) + 0.1))

    va, ga = ad.value_and_grad(lambda p, o: f(p, o, "object"), (0, 1))(probes, obj)
    vb, gb = ad.value_and_grad(lambda p, o: f(p, o, "patches"), (0, 1))(probes, obj)
    assert abs(va - vb) < 1e-12 * abs(vb)
    for a, b in zip(ga, gb, strict=True):
        assert rel_err(a, b) < 1e-10
    with pytest.raises(ValueError, match="per-position"):
        ad.multislice(probes[:3], patches, H)
