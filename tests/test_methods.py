"""The methods options inside word_kd / seq_kd / hybrid_kd, against independent truths:
--kd-divergence values from plain torch formulas, the uncertainty gate's loss by hand,
hidden-state distillation zero for a self-teacher, and a fairseq-train run whose projection
stays out of the checkpoint that fairseq-generate and the CTranslate2 export load."""
import copy

import pytest
import torch
import torch.nn.functional as F

from tests import helpers
from tests.test_seq_kd import seq_kd_args, small  # noqa: F401  (module fixture)
from tests.test_word_kd import attach_teacher, grads, make_criterion, perturbed_copy
from tests.test_word_kd import tiny_bin  # noqa: F401  (module fixture)

NARROW_ARCH = [a if a not in ("32", "64") else {"32": "16", "64": "32"}[a] for a in helpers.TINY_ARCH_ARGS]


def plain_divergence(t_logits, s_logits, kind, T, beta=0.3):
    """The divergences written out with torch softmaxes (no fairseq_kd code).  # B x T x V -> B x T"""
    p, q = F.softmax(t_logits.float() / T, -1), F.softmax(s_logits.float() / T, -1)
    if kind == "reverse_kl":
        return (q * (q.log() - p.log())).sum(-1)
    m = beta * p + (1 - beta) * q
    return beta * (p * (p.log() - m.log())).sum(-1) + (1 - beta) * (q * (q.log() - m.log())).sum(-1)


@pytest.mark.parametrize("kind", ["reverse_kl", "jsd"])
def test_word_kd_divergence_values_and_self_teacher(tiny_bin, kind):
    task, model, _ = helpers.build_components(tiny_bin)
    model.train()
    teacher = perturbed_copy(model)
    attach_teacher(task, [teacher])
    sample = helpers.first_batch(task)
    crit = make_criterion(task, kd_alpha=1.0, kd_temperature=2.0, kd_divergence=kind, kd_jsd_beta=0.3)
    loss, _, log = crit(model, sample)
    with torch.no_grad():
        s_logits, t_logits = model(**sample["net_input"])[0], teacher(**sample["net_input"])[0]
    valid = sample["target"].ne(task.target_dictionary.pad())
    want = 4.0 * (plain_divergence(t_logits, s_logits, kind, 2.0) * valid).sum()
    torch.testing.assert_close(loss.detach(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log["kd_loss"], want, rtol=1e-5, atol=1e-5)
    # a self-teacher: zero loss, zero gradient
    attach_teacher(task, [copy.deepcopy(model)])
    model.zero_grad()
    loss, _, _ = crit(model, sample)
    loss.backward()
    assert abs(float(loss)) < 1e-4 and max(g.abs().max().item() for g in grads(model)) < 1e-5


def test_word_kd_refuses_impossible_divergence_options(tiny_bin):
    task, model, _ = helpers.build_components(tiny_bin)
    attach_teacher(task, [perturbed_copy(model)])
    with pytest.raises(ValueError, match="kd-topk-tail keep"):
        make_criterion(task, kd_divergence="reverse_kl", kd_topk=4)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        make_criterion(task, kd_divergence="jsd", kd_jsd_beta=0.0)
    task.cfg.teacher_cache = "/some/cache"
    with pytest.raises(ValueError, match="renormalize"):
        make_criterion(task, kd_divergence="jsd", kd_topk_tail="keep")


def build_hybrid(small, tmp_path, *extra):  # noqa: F811
    args = seq_kd_args(small, "greedy", "--save-dir", str(tmp_path)) + list(extra)
    args[args.index("seq_kd")] = "hybrid_kd"
    task, model, crit = helpers.build_components(small.data_bin, extra=args)
    model.train()
    return task, model, crit, dict(helpers.first_batch(task, "train", n=12), kd_split="train")


@pytest.mark.integration
def test_hybrid_uncertainty_gate_loss_by_hand(small, tmp_path):  # noqa: F811
    import math

    task, model, crit, batch = build_hybrid(small, tmp_path, "--hybrid-gate", "uncertainty", "--hybrid-weight", "0.3")
    assert [n for n, _ in crit.named_parameters()] == ["balance.log_vars"]
    loss, size, log = crit(model, batch)
    v = [-math.log(0.6), -math.log(1.4)]
    want = 0.5 * math.exp(-v[0]) * float(log["kd_loss"]) + 0.5 * math.exp(-v[1]) * float(log["ce_loss"]) \
        + 0.5 * sum(v) * size
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert (log["w_tok"], log["w_sent"], log["gate"]) == pytest.approx((0.3, 0.7, 0.3))
    loss.backward()
    assert crit.balance.log_vars.grad.abs().sum() > 0


@pytest.mark.integration
@pytest.mark.parametrize("criterion", ["word_kd", "seq_kd", "hybrid_kd"])
def test_hidden_term_zero_for_a_self_teacher(small, tmp_path, criterion):  # noqa: F811
    """Student = the teacher's weights, same widths (identity projection): the term is 0 in
    every criterion, and the loss is the one without it."""
    args = seq_kd_args(small, "greedy", "--save-dir", str(tmp_path))
    args[args.index("seq_kd")] = criterion
    if criterion == "word_kd":
        args += ["--kd-alpha", "0.5"]
    task, model, plain = helpers.build_components(small.data_bin, extra=args)
    _, _, with_hidden = helpers.build_components(
        small.data_bin, extra=args + ["--kd-hidden-weight", "2", "--kd-hidden-decoder", "--kd-hidden-loss", "cosine"])
    with_hidden.task = plain.task = task
    model.load_state_dict(task.load_teacher().models[0].state_dict())
    model.train()
    assert len(with_hidden.hidden.proj) == 0 and with_hidden.hidden.sides == ("encoder", "decoder")
    batch = dict(helpers.first_batch(task, "train", n=12), kd_split="train")
    if criterion != "word_kd":
        batch = task.distilled_sample(batch)
    l0, _, _ = plain(model, batch)
    l1, _, log = with_hidden(model, batch)
    assert abs(log["hidden_loss"]) < 1e-4
    torch.testing.assert_close(l1.detach(), l0.detach(), rtol=1e-5, atol=1e-4)


@pytest.mark.integration
def test_projection_trains_but_stays_out_of_the_model_checkpoint(small, tmp_path):  # noqa: F811
    """A narrower student (d=16) than its teacher (d=32): the projection is optimized with the
    student and saved under "criterion"; "model" holds exactly the student's own parameters, so
    fairseq-generate (strict load) and fairseq-kd-export load it; training resumes from it."""
    from fairseq_kd.cli import export as export_cli

    extra = seq_kd_args(small, "greedy") + ["--kd-hidden-weight", "1", "--kd-hidden-decoder",
                                            "--kd-hidden-map", "encoder=1:1;decoder=1:1"]
    extra[extra.index("seq_kd")] = "word_kd"
    ckpt = helpers.train(small.data_bin, tmp_path / "s", extra=extra + ["--max-update", "3"], arch_args=NARROW_ARCH,
                         max_epoch=1, max_tokens=300)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert sorted(state["criterion"]) == ["hidden.proj.decoder.weight", "hidden.proj.encoder.weight"]
    assert tuple(state["criterion"]["hidden.proj.encoder.weight"].shape) == (32, 16)
    _, bare, _ = helpers.build_components(small.data_bin, arch_args=NARROW_ARCH)
    assert sorted(state["model"]) == sorted(bare.state_dict())
    hyps = helpers.generate(small.data_bin, ckpt, split="valid")
    assert len(hyps) == 40
    meta = export_cli.main([str(ckpt), str(tmp_path / "ct2")])
    assert (tmp_path / "ct2" / "model.bin").exists() and meta["output"] == str(tmp_path / "ct2")
    # the projection trained, and resuming restores it
    proj0 = state["criterion"]["hidden.proj.encoder.weight"].clone()
    ckpt2 = helpers.train(small.data_bin, tmp_path / "s", extra=extra + ["--max-update", "5"], arch_args=NARROW_ARCH,
                          max_epoch=2, max_tokens=300)
    state2 = torch.load(ckpt2, map_location="cpu", weights_only=False)
    assert state2["optimizer_history"][-1]["num_updates"] == 5
    assert not torch.equal(state2["criterion"]["hidden.proj.encoder.weight"], proj0)
