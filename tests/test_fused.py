"""fairseq_kd.fused: the tempered forward KL from logits equals the log-softmax route (values and
gradients), eager and compiled, and the criteria use it at T != 1."""
import pytest
import torch

from fairseq_kd import fused, kd_losses


def _case(seed=0, n=(3, 5), V=37, K=6, dead=True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*n, V, generator=g, dtype=torch.float64) * 3
    t_full = torch.log_softmax(torch.randn(*n, V, generator=g, dtype=torch.float64) * 2, -1)
    ids = torch.stack([torch.randperm(V, generator=g)[:K] for _ in range(n[0] * n[1])]).view(*n, K)
    t_top = torch.log_softmax(torch.randn(*n, K, generator=g, dtype=torch.float64), -1)
    if dead:  # teacher probability exactly 0 somewhere: those terms count 0
        t_full[0, 0, :5] = float("-inf")
        t_full[0, 0] = t_full[0, 0] - torch.logsumexp(t_full[0, 0], -1)
        t_top[1, 2, 0] = float("-inf")
        t_top[1, 2] = t_top[1, 2] - torch.logsumexp(t_top[1, 2], -1)
    return logits, t_full, ids, t_top


@pytest.mark.parametrize("T", [0.5, 2.0, 3.0])
def test_sparse_equals_log_softmax_route_value_and_gradient(T):
    logits, _, ids, t_top = _case()
    a = logits.clone().requires_grad_()
    ref = kd_losses.kl_sparse(ids, t_top, torch.log_softmax(a / T, -1))
    ref.sum().backward()
    b = logits.clone().requires_grad_()
    got = fused.kl_sparse_logits(ids, t_top, b, T)
    got.sum().backward()
    torch.testing.assert_close(got, ref.to(got.dtype))
    torch.testing.assert_close(b.grad, a.grad)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("T", [0.5, 2.0])
def test_full_equals_log_softmax_route_value_and_gradient(T):
    logits, t_full, _, _ = _case(1)
    a = logits.clone().requires_grad_()
    ref = kd_losses.kl_full(t_full, torch.log_softmax(a / T, -1))
    ref.sum().backward()
    b = logits.clone().requires_grad_()
    got = fused.kl_full_logits(t_full, b, T)
    got.sum().backward()
    torch.testing.assert_close(got, ref.to(got.dtype))
    torch.testing.assert_close(b.grad, a.grad)


def test_self_teacher_gives_zero():
    logits, _, _, _ = _case(2, dead=False)
    T = 2.0
    teacher = torch.log_softmax(logits / T, -1)
    assert fused.kl_full_logits(teacher, logits, T).abs().max() < 1e-12


def test_gradcheck_float64():
    logits, t_full, ids, t_top = _case(3, n=(2, 3), V=11, K=4, dead=False)
    z = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: fused.kl_sparse_logits(ids, t_top, x, 2.0), (z,))
    assert torch.autograd.gradcheck(lambda x: fused.kl_full_logits(t_full, x, 2.0), (z,))


def test_compiled_equals_eager(monkeypatch):
    """The compiled kernels (Inductor, as training uses them by default) give the eager values and
    gradients in fp32, for two batch shapes (dynamic shapes: one compilation)."""
    monkeypatch.setenv("FAIRSEQ_KD_COMPILE", "auto")
    monkeypatch.setattr(fused, "_COMPILED", {})
    monkeypatch.setattr(fused, "_FAILED", set())
    for n in ((3, 5), (4, 7)):
        logits, t_full, ids, t_top = (x.float() if x.is_floating_point() else x for x in _case(4, n=n))
        for name, args in (("sparse", (ids, t_top)), ("full", (t_full,))):
            a = logits.clone().requires_grad_()
            eager = fused.kl_sparse_logits(ids, t_top, a, 2.0) if name == "sparse" else fused.kl_full_logits(t_full, a, 2.0)
            eager.sum().backward()
            b = logits.clone().requires_grad_()
            got = fused.tempered_kl_sparse(ids, t_top, b, 2.0) if name == "sparse" else fused.tempered_kl_full(t_full, b, 2.0)
            got.sum().backward()
            torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6)
    assert not fused._FAILED, "torch.compile failed here: the eager fallback ran instead"
    assert set(fused._COMPILED) == {"sparse", "full"}


def test_compile_failure_falls_back_to_eager(monkeypatch, caplog):
    def broken(fn, dynamic=True):
        def run(*a):
            raise RuntimeError("no compiler")
        return run
    monkeypatch.setenv("FAIRSEQ_KD_COMPILE", "auto")
    monkeypatch.setattr(fused, "_COMPILED", {})
    monkeypatch.setattr(fused, "_FAILED", set())
    monkeypatch.setattr(torch, "compile", broken)
    logits, _, ids, t_top = (x.float() if x.is_floating_point() else x for x in _case(5, dead=False))
    got = fused.tempered_kl_sparse(ids, t_top, logits, 2.0)
    torch.testing.assert_close(got, fused.kl_sparse_logits(ids, t_top, logits, 2.0))
    assert "sparse" in fused._FAILED and "torch.compile" in caplog.text


def test_student_divergence_takes_the_fused_route_only_when_compilation_is_on(monkeypatch):
    """At T != 1 the criteria's forward KL goes through dist.kl_logits while compilation works and
    through log softmax(z / T) otherwise (the eager fused formulas are slower: bench_tempered_kl);
    both give the same value. At T = 1 the CE log-probs are used either way."""
    from fairseq_kd import divergences
    from fairseq_kd.teacher import TeacherDistribution

    logits, t_full, ids, t_top = (x.float() if x.is_floating_point() else x for x in _case(6, dead=False))
    calls = []
    real = TeacherDistribution.kl_logits
    monkeypatch.setattr(TeacherDistribution, "kl_logits", lambda self, z: calls.append(1) or real(self, z))
    monkeypatch.setattr(fused, "_fn", lambda name: {"sparse": fused.kl_sparse_logits, "full": fused.kl_full_logits}[name])
    for dist in (TeacherDistribution(2.0, t_top[..., 0], ids=ids, topk_lprobs=t_top),
                 TeacherDistribution(2.0, t_full[..., 0], lprobs=t_full)):
        monkeypatch.setenv("FAIRSEQ_KD_COMPILE", "0")
        slow = divergences.student_divergence(dist, logits)
        assert not calls
        monkeypatch.setenv("FAIRSEQ_KD_COMPILE", "auto")
        monkeypatch.setattr(fused, "_FAILED", set())
        fast = divergences.student_divergence(dist, logits)
        assert calls == [1]
        calls.clear()
        torch.testing.assert_close(fast, slow)
        monkeypatch.setattr(fused, "_FAILED", {"sparse"})  # a failed compilation: back to log softmax
        divergences.student_divergence(dist, logits)
        assert not calls
