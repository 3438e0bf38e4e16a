"""Divergences against independent truths: plain-Python sums, a self-teacher, the JSD limits, gradcheck."""
import math

import pytest
import torch

from fairseq_kd import losses
from fairseq_kd.losses import basic as kd_losses
from fairseq_kd.losses import divergences as D
from fairseq_kd.teacher import TeacherDistribution

P = [0.7, 0.2, 0.1]  # teacher
Q = [0.2, 0.5, 0.3]  # student


def kl(a, b):
    """Plain-Python KL(a || b) with 0 log 0 = 0."""
    return sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0)


def gjsd(p, q, beta):
    m = [beta * x + (1 - beta) * y for x, y in zip(p, q)]
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


def softmax(z, T=1.0):
    e = [math.exp(v / T) for v in z]
    return [v / sum(e) for v in e]


def lp(rows, dtype=torch.float32):
    return torch.tensor(rows, dtype=torch.float64).log().to(dtype)


def teacher(t_lp, topk=0, T=1.0):
    """The online teacher's distribution (full, or its top-k as ``--kd-topk`` asks) from log-probs at T."""
    return TeacherDistribution.from_log_probs(T, t_lp, torch.zeros(t_lp.shape[:-1]), topk)


def kd_terms(t_lp, s_logits, kind, T=1.0, mask=None, topk=0, tail="keep", beta=0.5, pad=1):
    """The criteria's KD term per position: ``losses.ce_and_divergence``'s T^2 * D(teacher, softmax(s_logits / T)),
    0 where ``mask`` is False; ``t_lp``: the teacher's log-probs at T."""
    mask = torch.ones(s_logits.shape[:-1], dtype=torch.bool) if mask is None else mask
    target = torch.where(mask, torch.zeros_like(mask, dtype=torch.long), torch.full_like(mask, pad, dtype=torch.long))
    spec = losses.KDLossSpec(T, topk, 0.0, kind, beta, tail)
    dist = teacher(t_lp, topk, T)
    return losses.ce_and_divergence(spec, s_logits, target, pad, dist).kd


@pytest.mark.parametrize("kind,truth", [
    ("forward_kl", kl(P, Q)), ("reverse_kl", kl(Q, P)), ("jsd", gjsd(P, Q, 0.3))])
def test_hand_computed_values(kind, truth):
    got = D.divergence(lp([P]), lp([Q]), kind, beta=0.3)
    assert got.shape == (1,)
    assert float(got) == pytest.approx(truth, rel=1e-6)


def test_fixed_batch_with_temperature_t2_factor_and_padding():
    zt = [[[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], [[1.0, 2.0, 3.0], [9.0, -9.0, 0.0]]]  # B=2 x T=2 x V=3
    zs = [[[0.0, 1.0, 0.0], [1.0, -1.0, 0.0]], [[3.0, 2.0, 1.0], [0.0, 0.0, 0.0]]]
    mask = torch.tensor([[True, True], [True, False]])
    T = 2.0
    t_lp = kd_losses.student_log_probs(torch.tensor(zt), T)
    t_lp[1, 1] = float("nan")  # garbage at a pad position never leaks
    for kind, fn in (("forward_kl", lambda p, q: kl(p, q)), ("reverse_kl", lambda p, q: kl(q, p)),
                     ("jsd", lambda p, q: gjsd(p, q, 0.5))):
        got = kd_terms(t_lp, torch.tensor(zs), kind, T, mask=mask, beta=0.5)
        for b in range(2):
            for t in range(2):
                want = T * T * fn(softmax(zt[b][t], T), softmax(zs[b][t], T)) if mask[b, t] else 0.0
                assert float(got[b, t]) == pytest.approx(want, rel=1e-5, abs=1e-7), (kind, b, t)


def test_zero_probability_terms_and_infinite_reverse_kl():
    p, q = [0.5, 0.5, 0.0], [0.25, 0.25, 0.5]
    assert float(D.forward_kl(lp([p]), lp([q]))) == pytest.approx(math.log(2))
    assert float(D.reverse_kl(lp([p]), lp([q]))) == math.inf  # q puts mass where p has none
    assert float(D.jsd(lp([p]), lp([q]), 0.5)) == pytest.approx(gjsd(p, q, 0.5))
    s = lp([q]).requires_grad_()
    D.forward_kl(lp([p]), s).backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("kind", D.DIVERGENCES)
@pytest.mark.parametrize("topk", [0, 3])
def test_self_teacher_zero_loss_zero_gradient(kind, topk):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7, requires_grad=True)
    t_lp = kd_losses.student_log_probs(logits, 2.0).detach()
    loss = kd_terms(t_lp, logits, kind, 2.0, topk=topk, beta=0.4).sum()
    loss.backward()
    assert abs(float(loss)) < 1e-5  # fp32 rounding over 8 positions x T^2
    assert logits.grad.abs().max() < 1e-6


def test_jsd_limits():
    p, q = lp([P], torch.float64), lp([Q], torch.float64)
    fkl, rkl = float(D.forward_kl(p, q)), float(D.reverse_kl(p, q))
    eps = 1e-6
    assert float(D.jsd(p, q, eps)) / eps == pytest.approx(fkl, rel=1e-4)  # JSD/beta -> KL(p||q)
    assert float(D.jsd(p, q, 1 - eps)) / eps == pytest.approx(rkl, rel=1e-4)  # JSD/(1-beta) -> KL(q||p)
    assert float(D.jsd(p, q, eps)) < 10 * eps * fkl  # and JSD itself vanishes at both ends
    assert float(D.jsd(p, q, 0.5)) == pytest.approx(gjsd(P, Q, 0.5))
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="forward_kl / reverse_kl"):
            D.jsd(p, q, bad)


def test_topk_view_by_hand():
    p, q = [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]
    t, s = lp([p]), lp([q])
    top2 = teacher(t, 2)  # what --kd-topk 2 gets from an online teacher

    def div(kind, tail, beta=0.5, dist=top2):
        return float(D.distribution_divergence(dist, s, kind, beta, tail))
    # keep: buckets {0}, {1}, tail {2, 3}
    pk, qk = [0.4, 0.3, 0.3], [0.1, 0.2, 0.7]
    assert div("forward_kl", "keep") == pytest.approx(kl(pk, qk), rel=1e-6)
    assert div("reverse_kl", "keep") == pytest.approx(kl(qk, pk), rel=1e-6)
    assert div("jsd", "keep", 0.3) == pytest.approx(gjsd(pk, qk, 0.3), rel=1e-6)
    # renormalize: teacher 4/7, 3/7, tail 0
    pr = [4 / 7, 3 / 7, 0.0]
    assert div("forward_kl", "renormalize") == pytest.approx(kl(pr, qk), rel=1e-6)
    assert div("jsd", "renormalize", 0.3) == pytest.approx(gjsd(pr, qk, 0.3), rel=1e-6)
    with pytest.raises(ValueError, match="reverse KL"):
        div("reverse_kl", "renormalize")
    # k = V is the full vocabulary
    for kind in D.DIVERGENCES:
        full = D.divergence(t, s, kind, 0.3)
        torch.testing.assert_close(D.distribution_divergence(teacher(t, 4), s, kind, 0.3, "keep"), full)
        torch.testing.assert_close(D.distribution_divergence(teacher(t), s, kind, 0.3, "keep"), full)


def test_renormalized_forward_kl_is_word_kd_topk_kl():
    torch.manual_seed(1)
    t = torch.log_softmax(torch.randn(3, 5, 11), -1)
    s = torch.log_softmax(torch.randn(3, 5, 11), -1)
    ids, t_k = kd_losses.topk_renormalized(t, 4)
    want = kd_losses.kl_sparse(ids, t_k, s)
    t_view, s_view = D.bucket_view(ids, t_k, s)
    torch.testing.assert_close(D.forward_kl(t_view, s_view), want)
    torch.testing.assert_close(D.distribution_divergence(teacher(t, 4), s, "forward_kl", tail="renormalize"), want)


@pytest.mark.parametrize("kind,topk,tail", [(k, n, t) for k in D.DIVERGENCES for n, t in
                                             ((0, "keep"), (3, "keep"), (3, "renormalize"))
                                             if not (k == "reverse_kl" and t == "renormalize")])  # refused
def test_gradcheck_float64(kind, topk, tail):
    torch.manual_seed(2)
    t_logits = torch.randn(2, 3, 6, dtype=torch.float64)
    s_logits = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    dist = teacher(torch.log_softmax(t_logits / 1.5, -1), topk, 1.5)

    def f(z):
        return D.distribution_divergence(dist, torch.log_softmax(z / 1.5, -1), kind, 0.35, tail)

    assert torch.autograd.gradcheck(f, (s_logits,), eps=1e-6, atol=1e-6)


def test_low_precision_inputs_are_computed_in_fp32():
    t, s = lp([P], torch.float16), lp([Q], torch.bfloat16)
    got = kd_terms(t, s, "jsd", beta=0.5)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(gjsd(P, Q, 0.5), rel=1e-2)
