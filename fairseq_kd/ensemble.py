"""Loading a teacher: one checkpoint or a ``:``-joined ensemble, its dictionaries checked against the
task's symbol by symbol, its device and dtype set once (``TeacherEnsemble.place``).

A teacher is held by the task, never by the student model, so it never enters the
optimizer or the student's checkpoint. It only ever runs under ``torch.no_grad()`` (not
inference mode: its outputs are saved for the student's backward, which inference tensors
cannot be, and cloning them out costs a full B x T x V copy per step). What criteria see of it
is ``fairseq_kd.teacher.Teacher``.
"""
import logging
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from fairseq_kd import checkpoint_safety
from fairseq_kd.errors import KDInputError
from fairseq_kd.fingerprint import file_sha256, files_fingerprint as teacher_fingerprint  # noqa: F401

logger = logging.getLogger(__name__)

TEACHER_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def split_paths(paths) -> List[str]:
    """``"a.pt:b.pt"`` or a list -> list of paths (the fairseq ``--path`` convention)."""
    if isinstance(paths, str):
        paths = paths.split(":")
    return [p for p in paths if p]


def dictionary_file(data: str, lang: str) -> str:
    """Where fairseq reads a dictionary: ``dict.<lang>.txt`` in the first data dir."""
    return os.path.join(str(data).split(":")[0], f"dict.{lang}.txt")


def check_same_dictionary(teacher_dict, teacher_file: str, task_dict, task_file: str, side: str) -> None:
    """Symbol-by-symbol comparison; raises naming both files and the first difference."""
    t_syms, s_syms = list(teacher_dict.symbols), list(task_dict.symbols)
    if t_syms == s_syms:
        return
    first = next((i for i, (a, b) in enumerate(zip(t_syms, s_syms)) if a != b), min(len(t_syms), len(s_syms)))
    t_sym = t_syms[first] if first < len(t_syms) else "<end of dictionary>"
    s_sym = s_syms[first] if first < len(s_syms) else "<end of dictionary>"
    raise KDInputError(
        f"teacher/student {side} vocabulary mismatch: teacher dictionary {teacher_file} "
        f"({len(t_syms)} symbols) differs from the task's {task_file} ({len(s_syms)} symbols) "
        f"first at index {first}: {t_sym!r} (teacher) vs {s_sym!r} (task). Binarize the student data "
        f"with the teacher's dictionaries (fairseq-preprocess --srcdict/--tgtdict <teacher dicts>)."
    )


class TeacherEnsemble(torch.nn.Module):
    """Frozen teacher model(s); ``log_probs`` averages the members' probabilities."""

    def __init__(self, models: Sequence[torch.nn.Module], paths: Sequence[str], src_dict, tgt_dict, cfg):
        super().__init__()
        self.models = torch.nn.ModuleList(models)
        self.paths = list(paths)
        self.src_dict, self.tgt_dict, self.cfg = src_dict, tgt_dict, cfg
        self.eval()
        # Frozen by construction: it only runs under no_grad / inference_mode and is held by
        # the task, never by the student or its optimizer. Its parameters keep requires_grad:
        # with requires_grad_(False), fairseq's incremental beam search ran ~30% slower on
        # CPU (torch 2.13; measured in fairseq-kd-distill), for no added safety.
        self._fingerprint: Optional[str] = None

    def train(self, mode: bool = True):
        """A teacher stays in eval mode whatever its owner does."""
        return super().train(False)

    def place(self, device, dtype: torch.dtype) -> "TeacherEnsemble":
        """Put the teacher on ``device`` in ``dtype``; done once, when it loads."""
        p = next(self.models.parameters())
        if p.device != torch.device(device) or p.dtype != dtype:
            logger.info("teacher: on %s in %s", device, dtype)
            self.to(device=device, dtype=dtype)
        return self

    def fingerprint(self) -> str:
        """sha256 over the checkpoint files' bytes, in order (identifies the teacher)."""
        if self._fingerprint is None:
            self._fingerprint = teacher_fingerprint(self.paths)
        return self._fingerprint

    def logits(self, net_input: Dict) -> List[torch.Tensor]:
        """Each member's output logits, B x T x V, computed without autograd."""
        with torch.no_grad():
            return [m(**net_input)[0] for m in self.models]

    def log_probs(self, net_input: Dict, temperature: float = 1.0) -> torch.Tensor:
        """fp32 log of the members' averaged softmax(z / T); a normal (autograd-safe) tensor.  # B x T x V"""
        with torch.no_grad():
            return _tempered(self.logits(net_input), temperature)

    def log_probs_and_gold(self, net_input: Dict, target: torch.Tensor, temperature: float = 1.0):
        """(log-probs at T: B x T x V, log-prob of ``target`` at T = 1: B x T), one forward pass."""
        with torch.no_grad():
            return _tempered_and_gold(self.logits(net_input), target, temperature)

    def hidden_states(self, net_input: Dict, layers: Mapping[str, Sequence[int]]) -> Dict:
        """The first member's outputs of ``layers`` (``{side: [1-based layer]}``) on ``net_input``, from
        one pass (the encoder alone when no decoder layer is asked for).  # {(side, i): T x B x C}"""
        from fairseq_kd.hidden import capture

        model = self.models[0]
        with torch.no_grad(), capture(model, layers) as states:
            if "decoder" in layers:
                model(**net_input)
            else:
                model.encoder(net_input["src_tokens"], src_lengths=net_input.get("src_lengths"))
        return dict(states)


def _tempered_and_gold(logits: List[torch.Tensor], target: torch.Tensor, temperature: float):
    """(log of the members' averaged softmax(z / T): B x T x V, log-prob of ``target`` at T = 1: B x T).

    At T != 1 the gold log-prob needs each member's normaliser at T = 1 too: one fused
    log-softmax kernel and a gather, measured 30 % cheaper on CPU than ``torch.logsumexp``
    (which runs max, subtract, exp and sum as separate passes over the vocabulary)."""
    lp = _tempered(logits, temperature)
    if temperature == 1.0:
        return lp, lp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    gold = [F.log_softmax(z.float(), dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1) for z in logits]
    return lp, _mean_log_probs(gold)


def _tempered(logits: List[torch.Tensor], temperature: float) -> torch.Tensor:
    """log of the members' averaged softmax(z / T), in fp32.  # each B x T x V -> B x T x V"""
    return _mean_log_probs([F.log_softmax(z.float() / temperature, dim=-1) for z in logits])


def _mean_log_probs(lps: List[torch.Tensor]) -> torch.Tensor:
    """log of the members' mean probability from their log-probabilities (one member: itself)."""
    if len(lps) == 1:
        return lps[0]
    return torch.logsumexp(torch.stack(lps, dim=0), dim=0) - math.log(len(lps))


def load_teacher(paths, task=None, teacher_data: Optional[str] = None, trust: bool = False) -> TeacherEnsemble:
    """Load ``paths`` (``a.pt:b.pt`` for an ensemble) and, given ``task``, check its dictionaries.

    ``teacher_data`` overrides the data directory stored in the checkpoint (where its
    ``dict.*.txt`` live) when the teacher was trained elsewhere.
    """
    from fairseq import checkpoint_utils

    paths = split_paths(paths)
    if not paths:
        raise KDInputError("--teacher-path is empty: give a checkpoint, or several joined by ':'")
    for p in paths:
        if not os.path.isfile(p):
            raise KDInputError(f"teacher checkpoint not found: {p} (fix --teacher-path)")
        if trust:
            checkpoint_safety.trust([p])
    overrides = {"data": teacher_data} if teacher_data else None
    try:
        models, cfg, teacher_task = checkpoint_utils.load_model_ensemble_and_task(paths, arg_overrides=overrides)
    except FileNotFoundError as err:
        raise KDInputError(
            f"could not load the teacher's dictionaries for {paths[0]}: {err}. The teacher's data "
            f"directory moved: pass --teacher-data DIR holding its dict.<lang>.txt files."
        ) from None
    teacher = TeacherEnsemble(models, paths, teacher_task.source_dictionary, teacher_task.target_dictionary, cfg)
    if task is not None:
        t_data = teacher_data or cfg.task.data
        for side, lang, t_dict, s_dict in (
            ("source", task.cfg.source_lang, teacher.src_dict, task.source_dictionary),
            ("target", task.cfg.target_lang, teacher.tgt_dict, task.target_dictionary),
        ):
            t_lang = getattr(teacher_task.cfg, f"{side}_lang", None) or getattr(cfg.task, f"{side}_lang", None) or lang
            check_same_dictionary(t_dict, dictionary_file(t_data, t_lang),  # the inferred language, never None
                                  s_dict, dictionary_file(task.cfg.data, lang), side)
    n_params = sum(p.numel() for p in teacher.parameters())
    logger.info("teacher: %d model(s) from %s, %d parameters each (frozen, eval mode)",
                len(paths), ":".join(paths), n_params // len(paths))
    return teacher
