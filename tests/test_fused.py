"""fairseq_kd.losses.fused: the tempered forward KL from logits equals the log-softmax route (values and
gradients), eager and compiled, and the criteria use it at T != 1."""
import pytest
import torch

from fairseq_kd.losses import basic as kd_losses, fused


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
    from fairseq_kd.teacher import TeacherDistribution

    if fused.blank_link_dir():  # tests/test_repo_path_with_space.py
        pytest.skip(f"no CPU compilation under a path with a blank: {fused.blank_link_dir()}")
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
        target = _targets(logits)  # CE + NLL + KL in one compiled pass, at T = 1 and 2
        for dist in (TeacherDistribution(1.0, t_top[..., 0], ids=ids, topk_lprobs=t_top),
                     TeacherDistribution(2.0, t_full[..., 0], lprobs=t_full)):
            a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
            eager = (fused.ce_kl_sparse_logits(a, target, ids, t_top, dist.temperature, 0.1, 1) if dist.sparse
                     else fused.ce_kl_full_logits(a, target, t_full, dist.temperature, 0.1, 1))
            got = fused.ce_and_kl(dist, b, target, 0.1, 1)
            assert got[3] is None  # the distribution holds its gold log-prob itself
            got = got[:3]
            sum(x.sum() for x in eager).backward()
            sum(x.sum() for x in got).backward()
            for x, y in zip(got, eager):
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6)
        zt = torch.randn(logits.shape, generator=torch.Generator().manual_seed(n[0])) * 3  # raw teacher logits
        lazy = TeacherDistribution(2.0, logits=zt, target=target)
        a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        eager = fused.ce_kl_teacher_logits(a, target, zt, 2.0, 0.1, 1)
        before = {k: id(v) for k, v in vars(lazy).items()}
        got = fused.ce_and_kl(lazy, b, target, 0.1, 1)
        assert {k: id(v) for k, v in vars(lazy).items()} == before  # the teacher's result is only read
        sum(x.sum() for x in eager[:3]).backward()
        sum(x.sum() for x in got[:3]).backward()
        for x, y in zip(got, eager):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6)
        assert lazy.from_logits  # the teacher's log-softmax was never computed
        fresh = TeacherDistribution(2.0, logits=zt, target=target)  # its gold log-prob alone: one compiled pass
        torch.testing.assert_close(fresh.gold_lprobs, fused.gold_log_probs(zt, target), rtol=1e-5, atol=1e-5)
        assert fresh.from_logits
    assert not fused._FAILED, "torch.compile failed here: the eager fallback ran instead"
    assert set(fused._COMPILED) == {"sparse", "full", "ce_sparse", "ce_full", "ce_tlogits", "gold"}


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


def test_no_compile_attempt_on_cpu_under_a_path_with_a_blank(monkeypatch, caplog):
    """torch under "/home/ann/My Projects/fairseq-kd/.venv": Inductor's g++ line would split its -L path, so
    the kernels are not compiled at all (no tracing), the eager formula runs and one warning names the path."""
    def never(fn, dynamic=True):
        def run(*a):
            raise AssertionError("compiled under a blank path")
        return run
    monkeypatch.setenv("FAIRSEQ_KD_COMPILE", "auto")
    monkeypatch.setattr(fused, "_COMPILED", {})
    monkeypatch.setattr(fused, "_FAILED", set())
    monkeypatch.setattr(torch, "compile", never)
    monkeypatch.setattr(fused, "blank_link_dir", lambda: "/home/ann/My Projects/fairseq-kd/.venv/torch/lib")
    logits, t_full, ids, t_top = (x.float() if x.is_floating_point() else x for x in _case(6, dead=False))
    torch.testing.assert_close(fused.tempered_kl_sparse(ids, t_top, logits, 2.0),
                               fused.kl_sparse_logits(ids, t_top, logits, 2.0))
    torch.testing.assert_close(fused.tempered_kl_full(t_full, logits, 2.0), fused.kl_full_logits(t_full, logits, 2.0))
    assert fused._FAILED == {"sparse", "full"} and not fused.enabled()
    (warning,) = [r.getMessage() for r in caplog.records if "torch.compile" in r.getMessage()]
    assert "'/home/ann/My Projects/fairseq-kd/.venv/torch/lib' holds a blank" in warning and "without spaces" in warning


def test_student_divergence_takes_the_fused_route_only_when_compilation_is_on(monkeypatch):
    """At T != 1 the criteria's forward KL goes through dist_kl_logits while compilation works and
    through log softmax(z / T) otherwise (the eager fused formulas are slower: bench_tempered_kl);
    both give the same value. At T = 1 the CE log-probs are used either way."""
    from fairseq_kd.losses import divergences
    from fairseq_kd.teacher import TeacherDistribution

    logits, t_full, ids, t_top = (x.float() if x.is_floating_point() else x for x in _case(6, dead=False))
    calls = []
    real = divergences.dist_kl_logits
    monkeypatch.setattr(divergences, "dist_kl_logits", lambda dist, z, T: calls.append(1) or real(dist, z, T))
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


def _targets(logits, pad=1, seed=8):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(2, logits.size(-1), logits.shape[:-1], generator=g)
    target[0, -2:] = pad  # a shorter sentence: padded positions
    return target


@pytest.mark.parametrize("T", [1.0, 2.0])
@pytest.mark.parametrize("kind", ["sparse", "full"])
def test_ce_and_kl_equal_fairseq_ce_and_the_log_softmax_route(kind, T):
    """CE, NLL and KL from the logits in one pass = fairseq's label_smoothed_nll_loss on
    log softmax(z) and kd_losses' KL on log softmax(z / T): values and gradients (float64, pads,
    teacher probabilities exactly 0)."""
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

    logits, t_full, ids, t_top = _case(7)
    target, pad, eps, V = _targets(logits), 1, 0.1, logits.size(-1)
    a = logits.clone().requires_grad_()
    ce, nll = label_smoothed_nll_loss(torch.log_softmax(a, -1).view(-1, V), target.view(-1), eps, pad, reduce=False)
    s_T = torch.log_softmax(a / T, -1)
    kl = kd_losses.kl_sparse(ids, t_top, s_T) if kind == "sparse" else kd_losses.kl_full(t_full, s_T)
    ref = (ce.view(-1), nll.view(-1), kl.view(-1))
    b = logits.clone().requires_grad_()
    got = (fused.ce_kl_sparse_logits(b, target, ids, t_top, T, eps, pad) if kind == "sparse"
           else fused.ce_kl_full_logits(b, target, t_full, T, eps, pad))
    for x, y in zip(got, ref):
        torch.testing.assert_close(x.reshape(-1), y)
    w = (0.6, 0.3, 0.4 * T * T)  # every output's gradient counts
    sum(wi * y.sum() for wi, y in zip(w, ref)).backward()
    sum(wi * x.sum() for wi, x in zip(w, got)).backward()
    torch.testing.assert_close(b.grad, a.grad)
    assert torch.all(got[0][target.eq(pad)] == 0) and torch.all(got[1][target.eq(pad)] == 0)


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_ce_and_kl_from_teacher_logits_equal_the_log_softmax_route(T):
    """From the teacher's raw logits: the same CE, NLL, KL as from its log softmax(zt / T), and
    its gold log-prob at T = 1; the lazy TeacherDistribution gives the same lprobs / gold."""
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
    from fairseq_kd.teacher import TeacherDistribution

    logits, _, _, _ = _case(11)
    zt = torch.randn(logits.shape, generator=torch.Generator().manual_seed(12), dtype=torch.float64) * 3
    target, pad, eps, V = _targets(logits), 1, 0.1, logits.size(-1)
    t_T = torch.log_softmax(zt / T, -1)
    a = logits.clone().requires_grad_()
    ce, nll = label_smoothed_nll_loss(torch.log_softmax(a, -1).view(-1, V), target.view(-1), eps, pad, reduce=False)
    kl = kd_losses.kl_full(t_T, torch.log_softmax(a / T, -1))
    gold = torch.log_softmax(zt, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    b = logits.clone().requires_grad_()
    got = fused.ce_kl_teacher_logits(b, target, zt, T, eps, pad)
    for x, y in zip(got, (ce.view(-1), nll.view(-1), kl.view(-1), gold.view(-1))):
        torch.testing.assert_close(x.reshape(-1), y)
    (ce.sum() + 0.5 * nll.sum() + T * T * kl.sum()).backward()
    (got[0].sum() + 0.5 * got[1].sum() + T * T * got[2].sum()).backward()
    torch.testing.assert_close(b.grad, a.grad)
    lazy = TeacherDistribution(T, logits=zt, target=target)
    assert lazy.from_logits
    torch.testing.assert_close(lazy.gold_lprobs, gold.float())  # fp32, as the online teacher
    torch.testing.assert_close(lazy.lprobs, t_T.float())
    assert not lazy.from_logits


def test_ce_and_kl_gradcheck_float64():
    logits, t_full, ids, t_top = _case(9, n=(2, 3), V=11, K=4, dead=False)
    target = _targets(logits)
    z = logits.clone().requires_grad_()
    for T in (1.0, 2.0):
        assert torch.autograd.gradcheck(lambda x: fused.ce_kl_sparse_logits(x, target, ids, t_top, T, 0.1, 1), (z,))
        assert torch.autograd.gradcheck(lambda x: fused.ce_kl_full_logits(x, target, t_full, T, 0.1, 1), (z,))
        assert torch.autograd.gradcheck(lambda x: fused.ce_kl_teacher_logits(x, target, t_full * 2, T, 0.1, 1), (z,))


def test_ce_and_kl_is_none_while_compilation_is_off(monkeypatch):
    from fairseq_kd.teacher import TeacherDistribution

    logits, t_full, _, _ = (x.float() for x in _case(10, dead=False))
    dist = TeacherDistribution(1.0, t_full[..., 0], lprobs=t_full)
    monkeypatch.setenv("FAIRSEQ_KD_COMPILE", "0")
    assert fused.ce_and_kl(dist, logits, _targets(logits), 0.1, 1) is None
    monkeypatch.setenv("FAIRSEQ_KD_COMPILE", "auto")
    monkeypatch.setattr(fused, "_FAILED", {"ce_full"})  # a failed compilation: the caller keeps its route
    assert fused.ce_and_kl(dist, logits, _targets(logits), 0.1, 1) is None
