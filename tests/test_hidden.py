"""Hidden-state distillation: layer maps, zero for a self-teacher, values against fairseq's own encoder_states."""
import copy

import pytest
import torch

from fairseq_kd import hidden
from fairseq_kd.errors import KDInputError
from fairseq_kd.teacher import TeacherEnsemble
from tests import helpers
from tests.test_word_kd import tiny_bin  # noqa: F401  (module fixture)

WIDE_ARCH = [a if a != "32" else "48" for a in helpers.TINY_ARCH_ARGS]  # d = 48 teacher vs d = 32 student
WIDE_ARCH[WIDE_ARCH.index("--encoder-layers") + 1] = "2"


def test_layer_maps():
    assert hidden.uniform_map(2, 4) == [(1, 2), (2, 4)]
    assert hidden.uniform_map(3, 6) == [(1, 2), (2, 4), (3, 6)]
    assert hidden.uniform_map(1, 1) == [(1, 1)]
    assert hidden.uniform_map(4, 2) == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert hidden.parse_map("1:3,2:3", "encoder", 2, 3) == [(1, 3), (2, 3)]
    assert hidden.parse_map("encoder=1:2;decoder=1:1", "decoder", 1, 3) == [(1, 1)]
    assert hidden.parse_map("encoder=1:2", "decoder", 2, 4) == [(1, 2), (2, 4)]  # side not given: uniform
    for bad in ("1:9", "x", "1-2", "middle=1:1"):
        with pytest.raises(KDInputError, match="kd-hidden-map"):
            hidden.parse_map(bad, "encoder", 2, 3)


def build_pair(tiny_bin, teacher_arch):
    task, student, _ = helpers.build_components(tiny_bin)
    _, teacher, _ = helpers.build_components(tiny_bin, arch_args=teacher_arch, seed=3)
    student.eval(), teacher.eval()
    return task, student, teacher, helpers.first_batch(task, n=6)


def teacher_states(model, hd, net_input):
    """The teacher's mapped layer outputs, as ``fairseq_kd.teacher.Teacher`` hands them to a criterion."""
    ens = TeacherEnsemble([model], ["in-memory"], None, None, None)
    return ens.hidden_states(net_input, dict(hd.teacher_layers()))


@pytest.mark.parametrize("kind", hidden.HIDDEN_LOSSES)
def test_self_teacher_gives_zero_term_and_zero_gradient(tiny_bin, kind):
    task, student, _, batch = build_pair(tiny_bin, helpers.TINY_ARCH_ARGS)
    teacher = copy.deepcopy(student)
    dims = hidden.model_dims(student)
    hd = hidden.HiddenDistiller(1.0, kind, None, True, dims, hidden.model_dims(teacher))
    assert len(hd.proj) == 0  # same widths: identity projection
    with hd.student_capture(student) as states:
        student(**batch["net_input"])
    term = hd.term(states, teacher_states(teacher, hd, batch["net_input"]), batch["net_input"],
                   task.target_dictionary.pad())
    term.backward()
    assert abs(float(term)) < 1e-6
    assert max(p.grad.abs().max().item() for p in student.parameters() if p.grad is not None) < 1e-5


def test_projection_and_value_against_fairseq_encoder_states(tiny_bin):
    task, student, teacher, batch = build_pair(tiny_bin, WIDE_ARCH)
    pad = task.source_dictionary.pad()
    s_dims, t_dims = hidden.model_dims(student), hidden.model_dims(teacher)
    assert s_dims == {"encoder": (1, 32), "decoder": (1, 32)} and t_dims == {"encoder": (2, 48), "decoder": (1, 48)}
    hd = hidden.HiddenDistiller(0.5, "mse", None, False, s_dims, t_dims)
    assert hd.pairs == {"encoder": [(1, 2)]} and list(hd.proj) == ["encoder"]
    assert hd.proj["encoder"].weight.shape == (48, 32)
    net_input = batch["net_input"]
    with hd.student_capture(student) as states:
        student(**net_input)
    term = hd.term(states, teacher_states(teacher, hd, net_input), net_input, pad)
    # independent truth: fairseq's own return_all_hiddens states (index 0 = embeddings)
    s = student.encoder(net_input["src_tokens"], net_input["src_lengths"], return_all_hiddens=True)["encoder_states"][1]
    with torch.no_grad():
        t = teacher.encoder(net_input["src_tokens"], net_input["src_lengths"],
                            return_all_hiddens=True)["encoder_states"][2]
    sq = ((hd.proj["encoder"](s) - t) ** 2).mean(-1).transpose(0, 1)  # B x T
    mask = net_input["src_tokens"].ne(pad)
    torch.testing.assert_close(term, 0.5 * sq[mask].mean())
    term.backward()
    assert hd.proj["encoder"].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_cosine_by_hand():
    s = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]])  # T=2 x B=1 x C=2
    t = torch.tensor([[[1.0, 1.0]], [[0.0, -1.0]]])
    got = hidden.state_distance(s, t, "cosine")
    torch.testing.assert_close(got, torch.tensor([[1 - 2 ** -0.5, 2.0]]))
    torch.testing.assert_close(hidden.state_distance(s, t, "mse"), torch.tensor([[0.5, 4.5]]))


class _Backward:
    """The one optimizer method fairseq's ``task.train_step`` calls."""

    def backward(self, loss):
        loss.backward()


@pytest.mark.parametrize("decoder", [False, True])
def test_one_teacher_forward_per_training_step_with_word_kd_and_hidden_states(tiny_bin, decoder):
    """word_kd + hidden-state distillation through the task's train_step: the teacher's encoder and
    decoder each run exactly once per step (distribution and hidden states come from one pass)."""
    from tests.test_word_kd import attach_teacher, make_criterion, perturbed_copy

    task, model, _ = helpers.build_components(tiny_bin)
    teacher = perturbed_copy(model)
    attach_teacher(task, [teacher])
    crit = make_criterion(task, kd_alpha=0.5, kd_temperature=2.0, kd_hidden_weight=1.0,
                          kd_hidden_decoder=decoder)
    calls = {"encoder": 0, "decoder": 0}
    for side in calls:
        getattr(teacher, side).register_forward_hook(lambda *_, side=side: calls.__setitem__(side, calls[side] + 1))
    sample = helpers.first_batch(task, n=6)
    for step in range(2):
        loss, _, log = task.train_step(sample, model, crit, _Backward(), update_num=step)
        assert calls == {"encoder": step + 1, "decoder": step + 1}
        assert log["hidden_loss"] > 0 and log["kd_loss"] > 0
