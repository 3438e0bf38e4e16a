"""onpolicy_kd against independent truths: word_kd at lambda = 0, the student's own greedy
argmax, a from-scratch teacher/student scoring of the same prefixes, a self-teacher."""
import copy
import logging

import pytest
import torch
from fairseq import metrics

from fairseq_kd import onpolicy
from fairseq_kd.losses import divergences
from fairseq_kd.criteria.onpolicy_kd import OnPolicyKDConfig, OnPolicyKDCriterion
from tests import helpers
from tests.test_word_kd import attach_teacher, grads, make_criterion, perturbed_copy
from tests.test_word_kd import tiny_bin  # noqa: F401  (module fixture)


def make_onpolicy(task, **kw):
    cfg = OnPolicyKDConfig(**{"sentence_avg": False, **kw})
    return OnPolicyKDCriterion(task, cfg)


def setup(tiny_bin, teacher="perturbed"):
    task, model, _ = helpers.build_components(tiny_bin)
    model.train()
    t = perturbed_copy(model) if teacher == "perturbed" else copy.deepcopy(model)
    attach_teacher(task, [t])
    return task, model, helpers.first_batch(task, n=8)


def test_schedule_by_hand():
    assert onpolicy.schedule_lambda(0.7, "constant", 0.9, 50) == 0.7
    assert onpolicy.schedule_lambda(0.8, "exp", 0.9, 0) == 0.0
    assert onpolicy.schedule_lambda(0.8, "exp", 0.9, 2) == pytest.approx(0.8 * (1 - 0.81))
    with pytest.raises(ValueError, match="onpolicy-schedule"):
        onpolicy.schedule_lambda(0.5, "linear", 0.9, 1)


@pytest.mark.parametrize("T,alpha,eps", [(1.0, 1.0, 0.0), (2.0, 1.0, 0.0), (2.0, 0.5, 0.1)])
def test_lambda_zero_equals_word_kd_on_gold(tiny_bin, T, alpha, eps):
    task, model, batch = setup(tiny_bin)
    results = []
    for crit in (make_onpolicy(task, onpolicy_lambda=0.0, kd_temperature=T, kd_alpha=alpha, label_smoothing=eps),
                 make_criterion(task, kd_alpha=alpha, kd_temperature=T, label_smoothing=eps)):
        model.zero_grad()
        torch.manual_seed(0)  # same dropout masks
        loss, size, log = crit(model, batch)
        loss.backward()
        results.append((loss.detach(), size, log["kd_loss"], grads(model)))
    (l1, s1, k1, g1), (l2, s2, k2, g2) = results
    assert float(l1) > 0.1
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k1, k2, rtol=1e-5, atol=1e-5)
    assert s1 == s2
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", divergences.DIVERGENCES)
def test_greedy_onpolicy_batch_is_the_students_argmax_and_loss_rescored(tiny_bin, kind):
    task, model, batch = setup(tiny_bin)
    crit = make_onpolicy(task, onpolicy_lambda=1.0, onpolicy_sampling="greedy", kd_divergence=kind, kd_jsd_beta=0.3)
    pad, eos = task.target_dictionary.pad(), task.target_dictionary.eos()
    torch.manual_seed(0)
    loss, size, log = crit(model, batch)
    assert log["onpolicy"] == 1 and log["onpolicy_sentences"] == 8
    # the student's own greedy outputs, rebuilt here from the criterion's sampler
    tokens = onpolicy.sample_outputs(model, batch["net_input"], eos, pad, greedy=True)
    new = onpolicy.onpolicy_sample(batch, tokens, pad)
    assert size == new["ntokens"] == int(new["target"].ne(pad).sum())
    assert model.training  # sampling restored the training mode
    target, valid = new["target"], new["target"].ne(pad)
    assert bool(target.eq(eos).sum(-1).eq(1).all())  # every row has exactly one EOS
    with torch.no_grad():
        out = model(**new["net_input"])[0]
        t_out = task._teacher.models[0](**new["net_input"])[0]  # the teacher reads the same prefixes
    # teacher forcing on its own greedy output: argmax reproduces each token (except a forced final EOS)
    src_len = batch["net_input"]["src_tokens"].ne(pad).sum(-1)
    max_len = (src_len.float() * 1.2 + 10).long()
    not_forced = valid & (torch.arange(target.size(1)).unsqueeze(0) + 1 < max_len.unsqueeze(1))
    assert bool((out.argmax(-1).eq(target) | ~not_forced).all())
    # the loss, recomputed from scratch on those prefixes (the tiny arch has no dropout)
    want = divergences.divergence(torch.log_softmax(t_out.float(), -1), torch.log_softmax(out.float(), -1), kind, 0.3)
    torch.testing.assert_close(loss.detach(), (want * valid).sum(), rtol=1e-5, atol=1e-5)


def test_self_teacher_zero_loss_and_gradient_on_sampled_prefixes(tiny_bin):
    task, model, batch = setup(tiny_bin, teacher="self")
    for kind in divergences.DIVERGENCES:
        crit = make_onpolicy(task, onpolicy_lambda=1.0, onpolicy_temperature=1.5, kd_divergence=kind)
        model.zero_grad()
        torch.manual_seed(1)
        loss, _, log = crit(model, batch)
        loss.backward()
        assert log["onpolicy"] == 1
        assert abs(float(loss)) < 1e-4
        assert max(g.abs().max().item() for g in grads(model)) < 1e-5


def test_logging_outputs_reduce_like_their_sum(tiny_bin):
    assert OnPolicyKDCriterion.logging_outputs_can_be_summed()
    task, model, batch = setup(tiny_bin)
    crit = make_onpolicy(task, onpolicy_lambda=1.0, onpolicy_sampling="greedy")
    logs = []
    for lam in (1.0, 0.0):
        crit.cfg.onpolicy_lambda = lam
        logs.append(crit(model, batch)[2])
    summed = {k: sum(log[k] for log in logs) for k in logs[0]}
    values = []
    for group in (logs, [summed]):
        with metrics.aggregate(new_root=True) as agg:
            OnPolicyKDCriterion.reduce_metrics(group)
            values.append(agg.get_smoothed_values())
    assert values[0]["onpolicy"] == values[1]["onpolicy"] == 0.5
    for key in ("loss", "nll_loss", "kd_loss", "onpolicy_lambda", "onpolicy_len"):
        assert values[0][key] == pytest.approx(values[1][key]), key


def test_bad_options(tiny_bin):
    task, _, _ = setup(tiny_bin)
    with pytest.raises(ValueError, match="kd-jsd-beta"):
        make_onpolicy(task, kd_divergence="jsd", kd_jsd_beta=1.0)
    with pytest.raises(ValueError, match="kd-topk-tail keep"):
        make_onpolicy(task, kd_divergence="reverse_kl", kd_topk=4)
    with pytest.raises(ValueError, match="onpolicy-lambda"):
        make_onpolicy(task, onpolicy_lambda=1.5)


@pytest.mark.integration
def test_fairseq_train_with_ensemble_teacher_and_noise_then_generate(tiny_teacher, tmp_path, caplog):
    """fairseq-train runs onpolicy_kd (ensemble teacher, source noise, exp schedule, sampled outputs)
    and fairseq-generate loads the student with nothing extra."""
    ckpt = str(tiny_teacher.checkpoint)
    caplog.set_level(logging.INFO)
    with metrics.aggregate(new_root=True):
        student = helpers.train(
            tiny_teacher.data_bin, tmp_path / "student", task="kd_translation", max_epoch=1, max_tokens=300,
            extra=["--teacher-path", f"{ckpt}:{ckpt}", "--criterion", "onpolicy_kd", "--onpolicy-lambda", "0.8",
                   "--onpolicy-schedule", "exp", "--onpolicy-decay", "0.5", "--kd-divergence", "jsd",
                   "--kd-temperature", "2", "--noise-deletion", "0.2", "--max-update", "6"])
    state = torch.load(student, map_location="cpu", weights_only=False)
    assert state["optimizer_history"][-1]["num_updates"] == 6
    # epoch stats: lambda followed the schedule 0.8 (1 - 0.5^u) over updates 0..5, some batches were on-policy
    stats = next(r.getMessage() for r in caplog.records
                 if r.getMessage().startswith("epoch 001 |") and "onpolicy_lambda" in r.getMessage())
    fields = dict(kv.strip().split(" ", 1) for kv in stats.split("|")[1:] if kv.strip().count(" ") == 1)
    want = sum(onpolicy.schedule_lambda(0.8, "exp", 0.5, u) for u in range(6)) / 6
    assert float(fields["onpolicy_lambda"]) == pytest.approx(want, abs=1e-3)
    assert 0 < float(fields["onpolicy"]) < 1
    hyps = helpers.generate(tiny_teacher.data_bin, student)
    assert len(hyps) == 40


def test_hidden_term_through_a_projection(tiny_bin):
    """--kd-hidden-weight adds W * (projected encoder-state MSE) * sample_size; the projection is a
    criterion parameter (what fairseq optimizes and checkpoints apart from the model)."""
    from fairseq_kd import hidden
    from tests.test_hidden import WIDE_ARCH

    task, model, _ = helpers.build_components(tiny_bin)
    _, wide, _ = helpers.build_components(tiny_bin, arch_args=WIDE_ARCH, seed=3)
    attach_teacher(task, [wide])
    assert task.teacher.student_dims == hidden.model_dims(model)  # what kd_translation recorded when it built it
    batch = helpers.first_batch(task, n=8)
    plain = make_onpolicy(task, onpolicy_lambda=0.0)
    with_hidden = make_onpolicy(task, onpolicy_lambda=0.0, kd_hidden_weight=0.5)
    assert [n for n, _ in with_hidden.named_parameters()] == ["hidden.proj.encoder.weight"]
    base, size, _ = plain(model, batch)
    loss, _, log = with_hidden(model, batch)
    net_input = batch["net_input"]
    s = model.encoder(net_input["src_tokens"], net_input["src_lengths"], return_all_hiddens=True)["encoder_states"][1]
    t = wide.encoder(net_input["src_tokens"], net_input["src_lengths"], return_all_hiddens=True)["encoder_states"][2]
    proj = with_hidden.hidden.proj["encoder"]
    mask = net_input["src_tokens"].ne(task.source_dictionary.pad())
    term = ((proj(s) - t) ** 2).mean(-1).transpose(0, 1)[mask].mean()
    torch.testing.assert_close(loss.detach(), (base + 0.5 * term * size).detach(), rtol=1e-5, atol=1e-5)
    assert log["hidden_loss"] == pytest.approx(float(0.5 * term * size), rel=1e-5)
    loss.backward()
    assert proj.weight.grad.abs().sum() > 0
