"""Teachers: load one checkpoint or an ensemble, check its dictionaries, and answer the one
question every KD criterion asks: *the teacher's distribution for this batch*.

``Teacher`` (built once by the task, handed to the criteria) gives it for a ``TeacherRequest``,
whatever the teacher is: an online single model, an ensemble (probabilities averaged), or the
offline top-k cache written by ``fairseq-kd-cache``. Its ``TeacherOutput`` holds a
``TeacherDistribution`` (full log-probabilities at temperature T (online) or top-k ids with
renormalised log-probabilities at T (cache, or ``--kd-topk``), plus the teacher's log-probability
of the gold token at T = 1) and the requested hidden states, all from one teacher forward.

A teacher is held by the task, never by the student model, so it never enters the
optimizer or the student's checkpoint. Its device and dtype are set once when it loads
(``--teacher-dtype``, default the student's training dtype) and never change per step.
It only ever runs under ``torch.no_grad()`` (not inference mode: its outputs are saved for
the student's backward, which inference tensors cannot be, and cloning them out costs a
full B x T x V copy per step).
"""
import contextlib
import logging
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from fairseq_kd import checkpoint_safety
from fairseq_kd.errors import KDInputError
from fairseq_kd.losses import basic, fused
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


class TeacherDistribution:
    """The teacher's distribution over a batch's target positions at temperature T (fp32); read-only.

    ``lprobs`` (full, B x T x V: online teachers) and/or ``ids`` + ``topk_lprobs``
    (B x T x K, renormalised over the K ids: the cache has only these; an online teacher
    asked for ``topk`` gives both). ``gold_lprobs`` (B x T) is log p_teacher(gold token) at T = 1, for logging
    the teacher's NLL. Values at padded positions are arbitrary: callers mask them.

    A single online teacher may instead hold its raw ``logits`` (B x T x V, its dtype) and the
    ``target`` (B x T): ``lprobs`` and ``gold_lprobs`` are then computed on first use (and kept), and
    ``losses.fused.ce_and_kl`` reads the logits directly, so the criterion's common path writes no
    teacher-side B x T x V tensor at all.
    """

    def __init__(self, temperature: float, gold_lprobs: Optional[torch.Tensor] = None,
                 lprobs: Optional[torch.Tensor] = None, ids: Optional[torch.Tensor] = None,
                 topk_lprobs: Optional[torch.Tensor] = None, logits: Optional[torch.Tensor] = None,
                 target: Optional[torch.Tensor] = None):
        if gold_lprobs is None and logits is None:
            raise ValueError("a TeacherDistribution needs gold_lprobs, or logits and target to compute them")
        self.temperature, self._gold, self._lprobs = temperature, gold_lprobs, lprobs
        self.ids, self.topk_lprobs, self.logits, self.target = ids, topk_lprobs, logits, target

    @classmethod
    def from_log_probs(cls, temperature: float, lprobs: torch.Tensor, gold_lprobs: torch.Tensor,
                       topk: int = 0) -> "TeacherDistribution":
        """Full log-probabilities at T (B x T x V), restricted to the top ``topk`` when > 0 (renormalised)."""
        if topk > 0:
            ids, topk_lp = basic.topk_renormalized(lprobs, topk)  # B x T x K
            return cls(temperature, gold_lprobs, lprobs=lprobs, ids=ids, topk_lprobs=topk_lp)
        return cls(temperature, gold_lprobs, lprobs=lprobs)

    @property
    def lprobs(self) -> Optional[torch.Tensor]:
        """Full log softmax(z / T) (fp32), from ``logits`` on first use when given those.  # B x T x V"""
        if self._lprobs is None and self.logits is not None:
            with torch.no_grad():
                self._lprobs = _tempered([self.logits], self.temperature)
        return self._lprobs

    @property
    def gold_lprobs(self) -> torch.Tensor:
        """log p_teacher(gold) at T = 1.  # B x T"""
        if self._gold is None:
            with torch.no_grad():
                self._gold = fused.teacher_gold(self.logits, self.target) if self._lprobs is None else None
                if self._gold is None:  # compilation off, or the log-softmax is there anyway
                    lp1 = self.lprobs if self.temperature == 1.0 else F.log_softmax(self.logits.float(), dim=-1)
                    self._gold = lp1.gather(-1, self.target.unsqueeze(-1)).squeeze(-1)
        return self._gold

    @property
    def from_logits(self) -> bool:
        """Full, and still only logits (nothing V-wide computed from them yet)."""
        return self.ids is None and self._lprobs is None and self.logits is not None

    @property
    def sparse(self) -> bool:
        """Top-k (``ids``/``topk_lprobs``) is what the KL uses; ``lprobs`` may also be there."""
        return self.ids is not None


@dataclass(frozen=True)
class TeacherRequest:
    """What a criterion needs from the teacher for every batch, fixed when the criterion is built.

    ``temperature`` / ``topk``: the distribution (``distribution`` False: none); ``prefix``: target
    positions to skip; ``hidden``: ``((side, (teacher layers, 1-based)), ...)`` whose outputs to return.
    """
    temperature: float = 1.0
    topk: int = 0
    prefix: int = 0
    distribution: bool = True
    hidden: Tuple[Tuple[str, Tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class TeacherOutput:
    """The teacher's answer for one batch: its distribution (None: no teacher for this batch, e.g. a
    valid split without a cache) and the requested layer outputs ``{(side, layer): T x B x C}``."""
    distribution: Optional[TeacherDistribution]
    hidden: Mapping[Tuple[str, int], torch.Tensor]


def teacher_input(sample: Dict) -> Dict:
    """The teacher's input: the clean source when the student's was noised, else the student's."""
    return sample.get("teacher_net_input") or sample["net_input"]


class Teacher:
    """The teacher as the criteria see it, built once by the task and handed to them: the ensemble
    (already on its device and dtype; None with a cache only), the offline caches by split (filled by
    the task as splits load), the task's teacher options (``cfg``) and the shapes of the student it
teaches. It never calls back into the
    task: ``teacher(sample, request)`` answers from the sample alone (its ``kd_split`` picks the cache,
    its ``teacher_net_input`` the teacher's input) with ONE teacher forward at most: distribution and
    hidden states come from the same pass. One exception: hidden states when the teacher reads another
    source than the student (on-the-fly noise, clean teacher input) come from an extra pass over the
    student's source, so that positions correspond.
    """

    def __init__(self, ensemble: Optional[TeacherEnsemble], caches: Mapping[str, object], pad: int, cfg=None,
                 student_dims: Optional[Dict[str, Tuple[int, int]]] = None):
        self.ensemble, self.caches, self.pad, self.cfg = ensemble, caches, pad, cfg
        self.student_dims = student_dims

    @property
    def path(self) -> Optional[str]:
        """``--teacher-path`` (None without an online teacher)."""
        return self.cfg.teacher_path if self.cfg is not None else None

    @property
    def cache_dir(self) -> Optional[str]:
        """``--teacher-cache`` (None without one)."""
        return self.cfg.teacher_cache if self.cfg is not None else None

    @property
    def online(self) -> bool:
        return self.ensemble is not None

    def __call__(self, sample: Dict, request: TeacherRequest) -> TeacherOutput:
        cache = self.caches.get(sample.get("kd_split")) if request.distribution else None
        layers = {side: tuple(ids) for side, ids in request.hidden}
        run_full = request.distribution and cache is None and self.ensemble is not None
        if layers and self.ensemble is None:
            raise KDInputError("hidden-state distillation needs an online teacher: pass --teacher-path CKPT")
        t_input = teacher_input(sample)
        same_input = t_input is sample["net_input"]
        states, logits = {}, None
        if run_full:
            with _capture(self.ensemble, layers if same_input else {}) as captured:
                logits = self.ensemble.logits(t_input)  # the one forward: B x T x V per member
            states = dict(captured)
        if layers and not (run_full and same_input):
            states = self.ensemble.hidden_states(sample["net_input"], layers)
        dist = None
        if cache is not None:
            dist = self._cached(cache, sample, request)
        elif logits is not None:
            dist = self._online(logits, sample["target"], request)
        return TeacherOutput(dist, states)

    def _cached(self, cache, sample, request: TeacherRequest) -> TeacherDistribution:
        target = sample["target"][:, request.prefix:]  # B x T
        ids, probs, gold = cache.lookup(sample, target, self.pad, request.prefix)  # B x T x K
        if 0 < request.topk < ids.size(-1):  # cached ids are sorted by probability
            ids, probs = ids[..., :request.topk], probs[..., :request.topk]
        return TeacherDistribution(request.temperature, gold, ids=ids,
                                   topk_lprobs=basic.temper_topk_probs(probs, request.temperature))

    def _online(self, logits: List[torch.Tensor], target: torch.Tensor, request: TeacherRequest):
        T, k, prefix = request.temperature, request.topk, request.prefix
        if len(logits) == 1 and fused.enabled():  # the fused route reads the logits
            z = logits[0][:, prefix:]  # B x T x V
            if k == 0:
                return TeacherDistribution(T, logits=z, target=target[:, prefix:])
            with torch.no_grad():
                values, ids = z.topk(k, dim=-1)  # the order of z / T; renormalising drops lse(z / T)
                values = values.float() / T  # B x T x K
                topk_lp = values - values.logsumexp(-1, keepdim=True)
            return TeacherDistribution(T, logits=z, target=target[:, prefix:], ids=ids, topk_lprobs=topk_lp)
        with torch.no_grad():
            lp, gold = _tempered_and_gold(logits, target, T)
        return TeacherDistribution.from_log_probs(T, lp[:, prefix:], gold[:, prefix:], k)


def _capture(ensemble: TeacherEnsemble, layers: Mapping[str, Sequence[int]]):
    """Record the first member's layer outputs during a forward (nothing when ``layers`` is empty)."""
    from fairseq_kd.hidden import capture

    return capture(ensemble.models[0], layers) if layers else contextlib.nullcontext({})


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
            check_same_dictionary(t_dict, dictionary_file(t_data, getattr(cfg.task, f"{side}_lang", lang)),
                                  s_dict, dictionary_file(task.cfg.data, lang), side)
    n_params = sum(p.numel() for p in teacher.parameters())
    logger.info("teacher: %d model(s) from %s, %d parameters each (frozen, eval mode)",
                len(paths), ":".join(paths), n_params // len(paths))
    return teacher
