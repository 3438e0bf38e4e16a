"""The teacher as criteria see it: the answer to the one question every KD criterion asks,
*the teacher's distribution (and hidden states) for this batch*. Loading a checkpoint or an
ensemble and checking its dictionaries live in ``fairseq_kd.ensemble``.

``Teacher`` (built once by the task, handed to the criteria) gives it for a ``TeacherRequest``,
whatever the teacher is: an online single model, an ensemble (probabilities averaged), or the
offline top-k cache written by ``fairseq-kd-cache``. Its ``TeacherOutput`` holds a
``TeacherDistribution`` (full log-probabilities at temperature T (online) or top-k ids with
renormalised log-probabilities at T (cache, or ``--kd-topk``), plus the teacher's log-probability
of the gold token at T = 1) and the requested hidden states, all from one teacher forward.

A teacher is held by the task, never by the student model, so it never enters the
optimizer or the student's checkpoint. Its device and dtype are set once when it loads
(``--teacher-dtype``, default the student's training dtype) and never change per step.
"""
import contextlib
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from fairseq_kd.ensemble import (  # noqa: F401  (loading lives in fairseq_kd.ensemble; imported from here too)
    TEACHER_DTYPES, TeacherEnsemble, _tempered, _tempered_and_gold, check_same_dictionary, dictionary_file,
    file_sha256, load_teacher, split_paths, teacher_fingerprint)
from fairseq_kd.errors import KDInputError
from fairseq_kd.losses import basic, fused


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
        cache.check_topk(request.topk)  # a top-k above the cache's k is refused, never silently cut to k
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


