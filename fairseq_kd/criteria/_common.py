"""Pieces every fairseq-kd criterion shares: the capacity penalty hook and metric helpers."""
import math
from typing import Dict, List

import torch
from fairseq import metrics, utils


def add_capacity_term(model, loss: torch.Tensor, sample_size, logging_output: Dict) -> torch.Tensor:
    """Add the model's capacity penalty (adaptive-capacity GLU models) to a summed loss.

    A model opts in by defining ``capacity_loss() -> (penalty, active_params)`` where
    ``penalty`` is a weighted scalar tensor. The summed loss is later divided by
    ``sample_size``, so the penalty is scaled by it to keep its weight per token.
    """
    fn = getattr(model, "capacity_loss", None)
    if fn is None:
        return loss
    penalty, active_params = fn()
    # summable logging (fairseq sums logging outputs over micro-batches and workers):
    # values plus a count, averaged in log_capacity_metrics
    logging_output["capacity_penalty"] = float(penalty.detach())
    logging_output["active_params"] = float(active_params)
    logging_output["capacity_logs"] = 1
    return loss + penalty.to(loss.dtype) * sample_size


def log_averaged(logging_outputs: List[Dict], keys, count_key: str, round_: int = 3) -> None:
    """Log ``sum(key) / sum(count_key)``: averages that survive fairseq summing the logs."""
    n = sum(log.get(count_key, 0) for log in logging_outputs)
    if n:
        for key in keys:
            metrics.log_scalar(key, sum(log.get(key, 0) for log in logging_outputs) / n, n, round=round_)


def log_capacity_metrics(logging_outputs: List[Dict]) -> None:
    """Average ``active_params`` / ``capacity_penalty`` over micro-batches and workers, when present."""
    log_averaged(logging_outputs, ("active_params", "capacity_penalty"), "capacity_logs")


def log_token_loss(name: str, total, ntokens, round_: int = 3, ppl_name: str = None) -> None:
    """Log ``total / ntokens`` in base 2 (fairseq's convention), optionally with a ppl."""
    metrics.log_scalar(name, total / max(ntokens, 1) / math.log(2), ntokens, round=round_)
    if ppl_name:
        metrics.log_derived(ppl_name, lambda meters: utils.get_perplexity(meters[name].avg))


def reduce_kd_metrics(logging_outputs: List[Dict], token_losses=()):
    """The metrics every fairseq-kd criterion logs; returns the ``total(key)`` summer.

    ``loss`` per sample_size, ``nll_loss``/``ppl`` per token (base 2, as fairseq), each of
    ``token_losses`` present in the logs per token, accuracy when reported, capacity metrics.
    """
    def total(key):
        return sum(log.get(key, 0) for log in logging_outputs)

    ntokens, sample_size = total("ntokens"), total("sample_size")
    metrics.log_scalar("loss", total("loss") / max(sample_size, 1) / math.log(2), sample_size, round=3)
    log_token_loss("nll_loss", total("nll_loss"), ntokens, ppl_name="ppl")
    for key in token_losses:
        if any(key in log for log in logging_outputs):
            log_token_loss(key, total(key), ntokens)
    if any("n_correct" in log for log in logging_outputs):
        metrics.log_scalar("accuracy", 100.0 * total("n_correct") / max(total("total"), 1), total("total"), round=2)
    log_capacity_metrics(logging_outputs)
    return total


def log_seq_kd_metrics(logging_outputs: List[Dict], total) -> None:
    """Share of sentences trained on the gold target (``--seq-kd-gold-mix``), sentences the teacher
    decoded, and of those the ones whose hypothesis was empty and fell back to gold (both summed)."""
    if any("seq_kd_gold" in log for log in logging_outputs):
        metrics.log_scalar("gold_frac", total("seq_kd_gold") / max(total("nsentences"), 1), round=3)
        if any("seq_kd_decoded" in log for log in logging_outputs):  # decoded in these steps, all workers
            metrics.log_scalar_sum("teacher_decoded", total("seq_kd_decoded"), round=0)
        if any(log.get("seq_kd_empty") for log in logging_outputs):
            metrics.log_scalar_sum("teacher_empty", total("seq_kd_empty"), round=0)


def teacher_of(task):
    """The ``fairseq_kd.teacher.Teacher`` a ``kd_translation`` task built (None for any other task)."""
    from fairseq_kd.tasks.kd_translation import KDTranslationTask

    return task.teacher if isinstance(task, KDTranslationTask) else None


def student_log_probs(model, net_output):
    """The student's fp32 log-probabilities, as fairseq's criteria get them (a thunk for the loss entry)."""
    return lambda: model.get_normalized_probs(net_output, log_probs=True)  # B x T x V


def plain_softmax(model) -> bool:
    """The decoder's output is a plain softmax of its logits (no adaptive softmax): the fused route applies."""
    return getattr(getattr(model, "decoder", None), "adaptive_softmax", True) is None
