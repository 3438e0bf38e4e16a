"""Hidden-state distillation: match chosen student layer outputs to the teacher's.

    term = W * sum_side mean_(s, t) in map  mean_positions  d(P_side h_s, h_t)

``d`` is the mean squared error over channels (``mse``) or the cosine distance
1 - cos(P h_s, h_t) (``cosine``); positions are the non-pad source tokens (encoder)
and target tokens (decoder, optional); ``P_side`` is a learned linear projection
student width -> teacher width when they differ, the identity otherwise. The term is
per token; a criterion adds ``term * sample_size`` to its summed loss.

* **Layer map.** Layers are numbered 1..N (layer outputs, not the embeddings).
  ``--kd-hidden-map`` is ``"1:2,2:4"`` (student layer : teacher layer), optionally per
  side as ``"encoder=1:2,2:4;decoder=1:3"``; by default each student layer i maps to
  teacher layer round(i * N_t / N_s) (uniform; the last maps to the last).
* **Inputs.** The teacher reads the student's own inputs for this term (the possibly
  noisy source, the decoder input the criterion used: gold, distilled or on-policy),
  so positions correspond. With an ensemble teacher, its first member's states are used.
  The criterion asks ``fairseq_kd.teacher.Teacher`` for them with its distribution: one teacher
  forward gives both (an extra pass over the student's source only when the teacher reads
  another one: on-the-fly noise with ``--noise-teacher-input clean``). Nothing here runs the teacher.
* **Where the projection lives.** In the criterion (a ``torch.nn.Module``): fairseq's
  trainer optimizes criterion parameters with the model's and saves them under
  ``"criterion"`` in the checkpoint, apart from ``"model"``, which is all that
  ``fairseq-generate`` and the CTranslate2 export load (``tests/test_hidden.py`` checks it).
* **Capture.** Forward hooks on ``model.encoder.layers`` / ``model.decoder.layers``
  (fairseq's Transformer and ``transformer_glu``): the model's own forward is unchanged.
"""
import contextlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.dataclass import ChoiceEnum, FairseqDataclass

from fairseq_kd.errors import KDInputError

HIDDEN_LOSSES = ("mse", "cosine")
SIDES = ("encoder", "decoder")


@dataclass
class HiddenKDConfig(FairseqDataclass):
    """The criterion options of this term (word_kd, seq_kd, hybrid_kd, onpolicy_kd inherit them)."""
    kd_hidden_weight: float = field(default=0.0, metadata={
        "help": "weight W of the hidden-state distillation term (per token); 0 = off"})
    kd_hidden_loss: ChoiceEnum(list(HIDDEN_LOSSES)) = field(default="mse", metadata={
        "help": "distance between projected student and teacher layer outputs"})
    kd_hidden_map: Optional[str] = field(default=None, metadata={
        "help": "student:teacher layer pairs, 1-based, e.g. '1:2,2:4' or 'encoder=1:2;decoder=1:1' (default uniform)"})
    kd_hidden_decoder: bool = field(default=False, metadata={
        "help": "also match decoder layers (default: encoder only)"})


def model_dims(model) -> Dict[str, Tuple[int, int]]:
    """``{side: (number of layers, width)}`` of a fairseq encoder-decoder Transformer."""
    dims = {}
    for side in SIDES:
        part = getattr(model, side, None)
        layers = getattr(part, "layers", None)
        if layers is None or len(layers) == 0 or not hasattr(layers[0], "embed_dim"):
            raise KDInputError(f"hidden-state distillation needs a Transformer {side} with .layers "
                               f"(got {type(model).__name__}); drop --kd-hidden-weight for this model")
        dims[side] = (len(layers), int(layers[0].embed_dim))
    return dims


def model_dims_or_none(model) -> Optional[Dict[str, Tuple[int, int]]]:
    """``model_dims`` for a Transformer, None for anything else (checked only if the term is used)."""
    try:
        return model_dims(model)
    except KDInputError:
        return None


def uniform_map(n_student: int, n_teacher: int) -> List[Tuple[int, int]]:
    """Student layer i -> teacher layer round(i * N_t / N_s), 1-based."""
    return [(i, max(1, min(n_teacher, int(round(i * n_teacher / n_student))))) for i in range(1, n_student + 1)]


def parse_map(spec: Optional[str], side: str, n_student: int, n_teacher: int) -> List[Tuple[int, int]]:
    """The layer pairs of one side from ``--kd-hidden-map`` (uniform when absent)."""
    text = (spec or "").strip()
    if "=" in text:  # per side: "encoder=1:2;decoder=1:3"
        per_side = dict(part.split("=", 1) for part in text.split(";") if part.strip())
        unknown = set(k.strip() for k in per_side) - set(SIDES)
        if unknown:
            raise KDInputError(f"--kd-hidden-map {spec!r}: unknown side(s) {sorted(unknown)}; "
                               f"use encoder=...;decoder=...")
        text = {k.strip(): v for k, v in per_side.items()}.get(side, "").strip()
    if not text:
        return uniform_map(n_student, n_teacher)
    pairs = []
    for item in text.split(","):
        try:
            s, t = (int(x) for x in item.split(":"))
        except ValueError:
            raise KDInputError(f"--kd-hidden-map {spec!r}: {item!r} is not STUDENT_LAYER:TEACHER_LAYER") from None
        if not (1 <= s <= n_student and 1 <= t <= n_teacher):
            raise KDInputError(f"--kd-hidden-map {spec!r}: {side} pair {s}:{t} is outside 1..{n_student} "
                               f"(student) / 1..{n_teacher} (teacher)")
        pairs.append((s, t))
    return pairs


def state_distance(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-position distance, fp32.  # T x B x C, T x B x C -> B x T"""
    s, t = student.float().transpose(0, 1), teacher.float().transpose(0, 1)  # B x T x C
    if kind == "mse":
        return (s - t).pow(2).mean(-1)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)
    raise ValueError(f"unknown --kd-hidden-loss {kind!r}; choose one of {', '.join(HIDDEN_LOSSES)}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over True positions.  # B x T, B x T -> scalar"""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp_min(1)


@contextlib.contextmanager
def capture(model, layers: Dict[str, Sequence[int]]):
    """Record the outputs of ``model.<side>.layers[i - 1]`` during the block: ``{(side, i): T x B x C}``."""
    states, handles = {}, []

    def hook_for(key):
        def hook(_module, _inputs, output):
            states[key] = output[0] if isinstance(output, tuple) else output
        return hook

    try:
        for side, indices in layers.items():
            for i in sorted(set(indices)):
                handles.append(getattr(model, side).layers[i - 1].register_forward_hook(hook_for((side, i))))
        yield states
    finally:
        for h in handles:
            h.remove()


class HiddenDistiller(torch.nn.Module):
    """Layer map, projections and loss of the hidden-state term (held by a criterion)."""

    def __init__(self, weight: float, loss: str, map_spec: Optional[str], decoder: bool,
                 student_dims: Dict[str, Tuple[int, int]], teacher_dims: Dict[str, Tuple[int, int]]):
        super().__init__()
        if weight < 0:
            raise ValueError(f"--kd-hidden-weight must be >= 0, got {weight}")
        if loss not in HIDDEN_LOSSES:
            raise ValueError(f"unknown --kd-hidden-loss {loss!r}; choose one of {', '.join(HIDDEN_LOSSES)}")
        self.weight, self.kind = float(weight), loss
        self.sides = ("encoder", "decoder") if decoder else ("encoder",)
        self.pairs = {side: parse_map(map_spec, side, student_dims[side][0], teacher_dims[side][0])
                      for side in self.sides}
        # one projection per side (all layers of a side share a width); none when widths match
        self.proj = torch.nn.ModuleDict({
            side: torch.nn.Linear(student_dims[side][1], teacher_dims[side][1], bias=False)
            for side in self.sides if student_dims[side][1] != teacher_dims[side][1]})

    def student_capture(self, model):
        return capture(model, {side: [s for s, _ in self.pairs[side]] for side in self.sides})

    def teacher_layers(self) -> Tuple[Tuple[str, Tuple[int, ...]], ...]:
        """The teacher layers this term reads, per side (a ``teacher.TeacherRequest``'s ``hidden``)."""
        return tuple((side, tuple(sorted({t for _, t in self.pairs[side]}))) for side in self.sides)

    def term(self, student_states: Dict, teacher_states: Dict, net_input: Dict, pad: int) -> torch.Tensor:
        """W * (per-token hidden-state distance, averaged over mapped layers, summed over sides).  # scalar

        ``teacher_states``: ``{(side, layer): T x B x C}`` from the teacher's forward on ``net_input``."""
        masks = {"encoder": net_input["src_tokens"].ne(pad), "decoder": net_input["prev_output_tokens"].ne(pad)}
        total = None
        for side in self.sides:
            proj = self.proj[side] if side in self.proj else None
            per_layer = []
            for s, t in self.pairs[side]:
                h = student_states[(side, s)]
                h = proj(h.to(proj.weight.dtype)) if proj is not None else h
                per_layer.append(masked_mean(state_distance(h, teacher_states[(side, t)], self.kind), masks[side]))
            side_term = torch.stack(per_layer).mean()
            total = side_term if total is None else total + side_term
        return self.weight * total


def build_distiller(teacher, weight: float, loss: str = "mse", map_spec: Optional[str] = None,
                    decoder: bool = False) -> Optional[HiddenDistiller]:
    """The criterion's distiller (None when ``weight`` is 0), from a ``fairseq_kd.teacher.Teacher``:
    the student's widths recorded by the task when it built the model, the teacher's from its (first)
    checkpoint."""
    if not weight:
        return None
    student = teacher.student_dims if teacher is not None else None
    if student is None:
        raise KDInputError("--kd-hidden-weight needs --task kd_translation with a Transformer student "
                           "(the task records the student's layer widths when it builds the model)")
    if not teacher.online:
        raise KDInputError("--kd-hidden-weight needs the teacher's hidden states: pass --teacher-path CKPT")
    return HiddenDistiller(weight, str(loss), map_spec, decoder, student, model_dims(teacher.ensemble.models[0]))


def teacher_layers(distiller: Optional[HiddenDistiller]) -> Tuple[Tuple[str, Tuple[int, ...]], ...]:
    """What to ask the teacher for (nothing when the term is off)."""
    return distiller.teacher_layers() if distiller is not None else ()


def capture_student(distiller: Optional[HiddenDistiller], model):
    """Context for the student's forward: records its mapped layers (nothing when off)."""
    return distiller.student_capture(model) if distiller is not None else contextlib.nullcontext({})


def add_hidden_term(distiller: Optional[HiddenDistiller], states: Dict, teacher_states: Dict, sample: Dict,
                    loss: torch.Tensor, sample_size, pad: int, logging_output: Dict) -> torch.Tensor:
    """``loss + term * sample_size`` (the term is per token, the loss summed); logs ``hidden_loss``.
    ``teacher_states``: the ``hidden`` of the batch's ``teacher.TeacherOutput`` (no teacher runs here)."""
    if distiller is None:
        return loss
    term = distiller.term(states, teacher_states, sample["net_input"], pad)
    logging_output["hidden_loss"] = float(term.detach()) * float(sample_size)
    return loss + term.to(loss.dtype) * sample_size


def log_hidden_metrics(logging_outputs) -> None:
    """``hidden_loss`` per sample_size (a plain distance, not in base 2), when present."""
    if any("hidden_loss" in log for log in logging_outputs):
        size = sum(log.get("sample_size", 0) for log in logging_outputs)
        metrics.log_scalar("hidden_loss", sum(log.get("hidden_loss", 0) for log in logging_outputs) / max(size, 1),
                           size, round=4)
