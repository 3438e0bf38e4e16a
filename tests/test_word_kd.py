"""word_kd against independent truths: fairseq's own CE, a self-teacher, hand-computed KL."""
import copy
import math

import pytest
import torch

from fairseq_kd.losses import basic as kd_losses
from fairseq_kd.losses import selection
from fairseq_kd.criteria.word_kd import WordKDCriterion
from fairseq_kd.teacher import TeacherEnsemble
from tests import helpers


@pytest.fixture(scope="module")
def tiny_bin(tmp_path_factory):
    root = tmp_path_factory.mktemp("wkd")
    raw = helpers.make_synthetic_corpus(root / "raw", n_train=40, n_valid=8, n_test=8)
    return helpers.preprocess(raw, root / "bin")


def make_criterion(task, **kw):
    cfg = dict(kd_alpha=0.5, kd_temperature=1.0, label_smoothing=0.0, kd_topk=0, kd_selection="none",
               kd_selection_ratio=0.5, kd_selection_queue_size=1000, report_accuracy=False,
               ignore_prefix_size=0, sentence_avg=False)
    cfg.update(kw)
    return WordKDCriterion(task, **cfg)


def attach_teacher(task, models):
    """Give the task an in-memory teacher (what --teacher-path would load)."""
    task.cfg.teacher_path = "in-memory"
    task.set_teacher(TeacherEnsemble(models, ["in-memory"], task.source_dictionary, task.target_dictionary, None))
    return task.load_teacher()


def perturbed_copy(model):
    """A teacher that differs from the student (re-drawn shared embeddings)."""
    teacher_model = copy.deepcopy(model)
    torch.nn.init.normal_(teacher_model.decoder.embed_tokens.weight)
    return teacher_model


def grads(model):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def test_alpha_zero_is_fairseq_label_smoothed_ce(tiny_bin):
    from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion

    task, model, _ = helpers.build_components(tiny_bin)
    sample = helpers.first_batch(task)
    ours = make_criterion(task, kd_alpha=0.0, label_smoothing=0.1)
    ref = LabelSmoothedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=0.1)
    model.train()
    results = []
    for crit in (ours, ref):
        model.zero_grad()
        torch.manual_seed(0)
        loss, size, log = crit(model, sample)
        loss.backward()
        results.append((loss.detach(), size, log["nll_loss"], grads(model)))
    (l1, s1, n1, g1), (l2, s2, n2, g2) = results
    assert torch.equal(l1, l2) and s1 == s2 and torch.equal(n1, n2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


@pytest.mark.parametrize("topk", [0, 5])
def test_self_teacher_gives_zero_kl_and_zero_kd_gradient(tiny_bin, topk):
    task, model, _ = helpers.build_components(tiny_bin)
    model.eval()  # no dropout: student and teacher compute the same function
    attach_teacher(task, [copy.deepcopy(model)])
    crit = make_criterion(task, kd_alpha=1.0, kd_temperature=2.0, kd_topk=topk)
    sample = helpers.first_batch(task)
    model.zero_grad()
    loss, _, log = crit(model, sample)
    loss.backward()
    if topk == 0:
        assert abs(float(log["kd_loss"])) < 1e-4
        assert max(g.abs().max().item() for g in grads(model)) < 1e-5
        return
    # a top-k teacher is not the student: with p = q, KL(p_k || q) = -log(Z_k) per token, Z_k the top-k
    # mass of softmax(z / T); the loss is T^2 times its sum over non-pad tokens, and its gradient is
    # that of T^2 sum p_k (log p_k - log_softmax(z / T)) with p_k fixed (a plain-torch reference)
    T, mask = 2.0, sample["target"].ne(task.target_dictionary.pad())
    got = grads(model)
    model.zero_grad()
    lp = torch.log_softmax(model(**sample["net_input"])[0].float() / T, -1)
    top, ids = lp.detach().exp().topk(topk, -1)
    z_k = top.sum(-1)
    assert float(log["kd_loss"]) == pytest.approx(-(T * T) * z_k.log()[mask].sum().item(), rel=1e-5)
    assert float(loss) == pytest.approx(float(log["kd_loss"]), rel=1e-6)  # alpha 1: the KD term only
    p_k = top / z_k.unsqueeze(-1)
    ref = (T * T) * (p_k * (p_k.log() - lp.gather(-1, ids))).sum(-1)[mask].sum()
    ref.backward()
    for g, r in zip(got, grads(model)):
        assert torch.allclose(g, r, rtol=1e-4, atol=1e-6)
    assert max(g.abs().max().item() for g in got) > 1e-3  # the top-k KD gradient is not zero


class FixedLogits(torch.nn.Module):
    """A 'model' returning fixed logits (B x T x V): lets the test control every number."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, **net_input):
        return self.logits, {}

    def get_normalized_probs(self, net_output, log_probs):
        return torch.log_softmax(net_output[0].float(), -1) if log_probs else torch.softmax(net_output[0].float(), -1)

    def get_targets(self, sample, net_output):
        return sample["target"]


def _hand_loss(s_logits, t_logits, target, pad, alpha, T):
    """Plain-Python reference: (1-a) NLL + a T^2 KL(softmax(t/T) || softmax(s/T)), non-pad only."""
    def softmax(xs, temp):
        m = max(x / temp for x in xs)
        e = [math.exp(x / temp - m) for x in xs]
        z = sum(e)
        return [v / z for v in e]

    total_nll = total_kl = 0.0
    for b in range(len(target)):
        for t in range(len(target[b])):
            if target[b][t] == pad:
                continue
            q1 = softmax(s_logits[b][t], 1.0)
            total_nll += -math.log(q1[target[b][t]])
            p, q = softmax(t_logits[b][t], T), softmax(s_logits[b][t], T)
            total_kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return (1 - alpha) * total_nll + alpha * T * T * total_kl, total_kl * T * T


def test_hand_computed_kl_two_sentences_T2(tiny_bin):
    task, _, _ = helpers.build_components(tiny_bin)
    pad = task.target_dictionary.pad()
    V = 6
    g = torch.Generator().manual_seed(3)
    s_logits, t_logits = torch.randn(2, 3, V, generator=g), torch.randn(2, 3, V, generator=g) * 2
    target = torch.tensor([[4, 5, 2], [3, 2, pad]])  # second sentence is shorter: last position is pad
    sample = {"net_input": {}, "target": target, "ntokens": 5, "id": torch.tensor([0, 1])}
    attach_teacher(task, [FixedLogits(t_logits)])
    crit = make_criterion(task, kd_alpha=0.3, kd_temperature=2.0)
    loss, size, log = crit(FixedLogits(s_logits), sample)
    want_loss, want_kd = _hand_loss(s_logits.tolist(), t_logits.tolist(), target.tolist(), pad, 0.3, 2.0)
    assert size == 5
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    assert float(log["kd_loss"]) == pytest.approx(want_kd, rel=1e-5)


def test_topk_equal_vocab_is_full_kl():
    g = torch.Generator().manual_seed(0)
    t_lp = torch.log_softmax(torch.randn(3, 4, 11, generator=g), -1)
    s_lp = torch.log_softmax(torch.randn(3, 4, 11, generator=g), -1)
    ids, lp = kd_losses.topk_renormalized(t_lp, 11)
    torch.testing.assert_close(kd_losses.kl_sparse(ids, lp, s_lp), kd_losses.kl_full(t_lp, s_lp))


def test_topk_equal_vocab_through_the_criterion(tiny_bin):
    task, model, _ = helpers.build_components(tiny_bin)
    model.eval()
    attach_teacher(task, [perturbed_copy(model)])
    sample = helpers.first_batch(task)
    V = len(task.target_dictionary)
    full = make_criterion(task, kd_temperature=2.0)(model, sample)[2]["kd_loss"]
    topk = make_criterion(task, kd_temperature=2.0, kd_topk=V)(model, sample)[2]["kd_loss"]
    assert float(topk) == pytest.approx(float(full), rel=1e-5)


@pytest.mark.parametrize("selection", ["none", "word", "batch"])
def test_reduce_false_sums_to_reduce_true(tiny_bin, selection):
    task, model, _ = helpers.build_components(tiny_bin)
    model.eval()
    attach_teacher(task, [perturbed_copy(model)])
    crit = make_criterion(task, kd_alpha=0.7, kd_temperature=2.0, label_smoothing=0.1, kd_selection=selection)
    sample = helpers.first_batch(task)
    summed, _, _ = crit(model, sample, reduce=True)
    per_token, _, _ = crit(model, sample, reduce=False)
    assert per_token.dim() == 1 and per_token.numel() == sample["target"].numel()
    assert float(per_token.sum()) == pytest.approx(float(summed), rel=1e-5)


def test_padding_never_contributes(tiny_bin):
    task, model, _ = helpers.build_components(tiny_bin)
    model.eval()
    attach_teacher(task, [perturbed_copy(model)])
    crit = make_criterion(task, kd_alpha=0.5, kd_temperature=2.0, label_smoothing=0.1)
    ds = (task.load_dataset("train"), task.dataset("train"))[1]
    lengths = [len(ds[i]["target"]) for i in range(len(ds))]
    short = min(range(len(ds)), key=lambda i: lengths[i])
    long_ = max(range(len(ds)), key=lambda i: lengths[i])
    assert lengths[short] < lengths[long_]
    alone = crit(model, ds.collater([ds[short]]), reduce=False)[0]
    padded_batch = ds.collater([ds[short], ds[long_]])
    row = list(padded_batch["id"]).index(short)
    T = padded_batch["target"].size(1)
    together = crit(model, padded_batch, reduce=False)[0].view(-1, T)[row]
    pad_mask = padded_batch["target"][row].eq(task.target_dictionary.pad())
    assert pad_mask.any()
    assert torch.all(together[pad_mask] == 0)
    torch.testing.assert_close(together[~pad_mask].sum(), alone.sum(), rtol=1e-5, atol=1e-5)


def test_selection_masks_pick_highest_ce():
    ce = torch.tensor([[0.1, 5.0, 0.3, 2.0], [4.0, 0.2, 0.0, 0.0]])
    valid = torch.tensor([[True, True, True, True], [True, True, False, False]])
    word = selection.selection_mask(ce, valid, "word", 0.5)
    assert word.tolist() == [[False, True, False, True], [True, False, False, False]]
    batch = selection.selection_mask(ce, valid, "batch", 0.5)  # 6 valid tokens -> top 3: 5.0, 4.0, 2.0
    assert batch.tolist() == [[False, True, False, True], [True, False, False, False]]
    queue = selection.CEQueue(100)
    first = selection.selection_mask(ce, valid, "global", 0.5, queue)  # empty queue: the batch's own quantile
    assert first.tolist() == batch.tolist()
    assert queue.values.numel() == 0 and queue.threshold(0.5) is None  # this update's values wait for its end
    queue.end_update()
    assert sorted(queue.values.tolist()) == sorted(ce[valid].tolist())
    queue.add(torch.full((96,), 10.0))  # a history of high CE values
    queue.end_update()
    glob = selection.selection_mask(ce, valid, "global", 0.5, queue, feed=False)
    assert not glob.any()  # nothing in this batch exceeds the global median
    history = selection.CEQueue(100)  # earlier updates' CE all at 3.0 (a hand-set global threshold)
    history.add(torch.full((100,), 3.0))
    history.end_update()
    picked = selection.selection_mask(ce, valid, "global", 0.5, history, feed=False)
    assert picked.tolist() == [[False, True, False, False], [True, False, False, False]]  # 5.0, 4.0: not batch's top 3
    assert queue.pending == []  # feed=False (validation) leaves the queue alone
    restored = selection.CEQueue(100)
    restored.load_state_dict(queue.state_dict())
    assert restored.values.numel() == 100 and torch.equal(restored.values, queue.values)  # FIFO kept the last 100


def test_temper_topk_probs_matches_softmax_at_T():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 9, generator=g)
    T = 2.5
    ids, _ = kd_losses.topk_renormalized(torch.log_softmax(z, -1), 4)
    from_cache = kd_losses.temper_topk_probs(torch.softmax(z, -1).gather(-1, ids), T)
    direct = kd_losses.topk_renormalized(torch.log_softmax(z / T, -1), 4)[1]
    torch.testing.assert_close(from_cache, direct, rtol=1e-5, atol=1e-5)


def test_ensemble_averages_probabilities(tiny_bin):
    task, m1, _ = helpers.build_components(tiny_bin, seed=1)
    _, m2, _ = helpers.build_components(tiny_bin, seed=2)
    m1.eval(), m2.eval()
    sample = helpers.first_batch(task)
    ens = TeacherEnsemble([m1, m2], ["a", "b"], task.source_dictionary, task.target_dictionary, None)
    got = ens.log_probs(sample["net_input"], temperature=2.0).exp()
    with torch.no_grad():
        p1 = torch.softmax(m1(**sample["net_input"])[0] / 2.0, -1)
        p2 = torch.softmax(m2(**sample["net_input"])[0] / 2.0, -1)
    torch.testing.assert_close(got, (p1 + p2) / 2, rtol=1e-5, atol=1e-6)
    assert got.grad_fn is None and not got.requires_grad  # no graph into the teacher
    student_lp = torch.log_softmax(torch.zeros_like(got, requires_grad=True), -1)
    kd_losses.kl_full(got.log(), student_lp).sum().backward()
    assert all(p.grad is None for p in ens.parameters())  # frozen: the KD loss never reaches it
    ens.train()
    assert not ens.training and not m1.training


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_log_probs_and_gold_are_at_T_and_at_one(tiny_bin, T):
    """The teacher's distribution is at T; the gold log-prob it logs (teacher_nll_loss) is always at T = 1,
    for one model and for an ensemble (log of the members' mean probability of the gold token)."""
    task, m1, _ = helpers.build_components(tiny_bin, seed=1)
    _, m2, _ = helpers.build_components(tiny_bin, seed=2)
    m1.eval(), m2.eval()
    sample = helpers.first_batch(task)
    y = sample["target"].unsqueeze(-1)  # B x T x 1
    with torch.no_grad():
        z1, z2 = (m(**sample["net_input"])[0] for m in (m1, m2))
    for members, zs in (([m1], [z1]), ([m1, m2], [z1, z2])):
        ens = TeacherEnsemble(members, ["m"] * len(members), task.source_dictionary, task.target_dictionary, None)
        lp, gold = ens.log_probs_and_gold(sample["net_input"], sample["target"], T)
        want_lp = torch.stack([torch.softmax(z / T, -1) for z in zs]).mean(0).log()
        want_gold = torch.stack([torch.softmax(z, -1).gather(-1, y).squeeze(-1) for z in zs]).mean(0).log()
        torch.testing.assert_close(lp, want_lp, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gold, want_gold, rtol=1e-5, atol=1e-5)


def test_bf16_student_and_teacher_loss_is_fp32_and_close(tiny_bin):
    """Under half precision the KD maths still runs in fp32; the teacher keeps the device and
    dtype it was given once (it is never moved to follow the student per step)."""
    task, model, _ = helpers.build_components(tiny_bin)
    model.eval()
    teacher = attach_teacher(task, [perturbed_copy(model)])
    crit = make_criterion(task, kd_alpha=0.5, kd_temperature=2.0)
    sample = helpers.first_batch(task)
    ref, _, ref_log = crit(model, sample)
    model.to(torch.bfloat16)
    teacher.place(torch.device("cpu"), torch.bfloat16)  # what --teacher-dtype bf16 (or --bf16) does at load
    loss, _, log = crit(model, sample)
    assert next(teacher.parameters()).dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert float(loss) == pytest.approx(float(ref), rel=0.05)
    assert float(log["kd_loss"]) == pytest.approx(float(ref_log["kd_loss"]), rel=0.1)
    model.to(torch.float32)
    crit(model, sample)
    assert next(teacher.parameters()).dtype == torch.bfloat16  # not moved per step


@pytest.mark.parametrize("flags,dtype", [([], torch.float32), (["--bf16"], torch.bfloat16),
                                         (["--amp"], torch.float16), (["--fp16"], torch.float16),
                                         (["--bf16", "--teacher-dtype", "fp32"], torch.float32)])
def test_teacher_dtype_defaults_to_the_students_training_dtype(tiny_bin, flags, dtype):
    task, _, _ = helpers.build_components(tiny_bin, extra=flags)
    assert task.teacher_dtype() == dtype
    assert task.teacher_device() == torch.device("cpu")  # --cpu


@pytest.mark.parametrize("T,topk", [(1.0, 0), (2.0, 0), (2.0, 5)])
def test_fused_route_gives_the_log_softmax_routes_loss_logs_and_gradients(tiny_bin, monkeypatch, T, topk):
    """With compilation on, CE, NLL and KL come from ``fused.ce_and_kl`` (run eagerly here; the
    compiled kernel equals it: tests/test_fused.py); the loss, every logged value (NLL, KD, the
    teacher's NLL, accuracy, the selection's NLL ranking) and the gradients are the
    log-softmax route's."""
    task, model, _ = helpers.build_components(tiny_bin)
    model.eval()
    attach_teacher(task, [perturbed_copy(model)])
    sample = helpers.first_batch(task)

    def run():
        crit = make_criterion(task, kd_alpha=0.4, kd_temperature=T, kd_topk=topk, label_smoothing=0.1,
                              kd_selection="word", report_accuracy=True)
        model.zero_grad()
        loss, size, log = crit(model, sample)
        loss.backward()
        return loss.detach(), log, grads(model)

    calls, out = helpers.run_both_loss_routes(monkeypatch, run)
    # the fused routes ran with compilation on only: the online teacher hands over its logits (a top-k
    # one its top-k from them, and its gold log-prob from one more pass over them)
    assert calls == (["ce_sparse", "gold"] if topk else ["ce_tlogits"])
    (l0, log0, g0), (l1, log1, g1) = out["0"], out["auto"]
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-4)
    for key in ("nll_loss", "kd_loss", "teacher_nll_loss", "n_correct", "total"):
        torch.testing.assert_close(log1[key], log0[key], rtol=1e-5, atol=1e-4)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("T", [float("nan"), float("inf"), 0.0])
def test_temperature_must_be_finite_and_positive(tiny_bin, T):
    """--kd-temperature nan / inf / 0 is refused when the criterion is built, in one line naming the flag."""
    from fairseq_kd.errors import KDInputError

    task, model, _ = helpers.build_components(tiny_bin)
    attach_teacher(task, [perturbed_copy(model)])
    with pytest.raises(KDInputError, match="--kd-temperature") as err:
        make_criterion(task, kd_temperature=T)
    assert "\n" not in str(err.value)
