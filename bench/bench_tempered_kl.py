"""The word-KD loss at T != 1 on one batch of logits: log-softmax route vs fairseq_kd.losses.fused.

Times forward + backward of what word_kd computes per step on the student's logits (N positions
x V): label-smoothed CE at T = 1 plus the T^2-weighted forward KL at T, for a teacher top-k
(the cache) and a full teacher distribution (online), three ways:

* ``log_softmax``: the student's log softmax(z / T) materialised (the code before fused.py);
* ``fused_eager``: ``fused.kl_*_logits`` run eagerly;
* ``fused_compiled``: the same through ``torch.compile`` (the criteria's route before ``ce_and_kl``);
* ``ce_fused``: CE, NLL and KL together from the logits, compiled (``fused.ce_and_kl``: no
  log-softmax tensor at all; the criteria's route), at T and at T = 1 (``t1_ce_fused``).
  The full teacher enters as raw logits (as an online teacher's does now) and its softmax is
  computed inside the timed pass, while the other routes get its log-probabilities for free;

and the T = 1 loss (which reuses the CE log-probs) as the floor. Medians of ``--reps``; ratios
against the T = 1 loss of the same run.

    OMP_NUM_THREADS=2 python bench/bench_tempered_kl.py --positions 2048 --vocab 3996 --threads 2
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--positions", type=int, default=2048, help="N target positions (a 2048-token batch)")
    p.add_argument("--vocab", type=int, default=3996, help="V (the main job's joint vocabulary)")
    p.add_argument("--topk", type=int, default=8)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--reps", type=int, default=21)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from fairseq_kd.losses import basic as kd_losses, fused
    from fairseq_kd.teacher import TeacherDistribution

    os.environ["FAIRSEQ_KD_COMPILE"] = "auto"
    N, V, K, T, eps = args.positions, args.vocab, args.topk, args.temperature, 0.1
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(N, V, generator=g) * 3
    gold = torch.randint(0, V, (N, 1), generator=g)
    ids = torch.randint(0, V, (N, K), generator=g)
    t_top = torch.log_softmax(torch.randn(N, K, generator=g), -1)
    t_full = torch.log_softmax(torch.randn(N, V, generator=g) * 3, -1)

    def ce(lp):
        nll = -lp.gather(-1, gold).squeeze(-1)
        return (1 - eps - eps / (V - 1)) * nll - eps / (V - 1) * lp.sum(-1)

    target, pad = gold.squeeze(-1), -1  # no padding in this batch

    def loss(z, kind, route):
        if route in ("ce_fused", "t1_ce_fused"):
            T_ = 1.0 if route == "t1_ce_fused" else T
            dist = (TeacherDistribution(T_, t_top[..., 0], ids=ids, topk_lprobs=t_top) if kind == "cache"
                    else TeacherDistribution(T_, logits=t_full, target=target))  # online: raw logits
            c, _, kd, _ = fused.ce_and_kl(dist, z, target, eps, pad)
            return (0.5 * c + 0.5 * T_ * T_ * kd).sum()
        lp = F.log_softmax(z, -1)
        if route == "t1":
            kd = kd_losses.kl_sparse(ids, t_top, lp) if kind == "cache" else kd_losses.kl_full(t_full, lp)
            return (0.5 * ce(lp) + 0.5 * kd).sum()
        if route == "log_softmax":
            s = F.log_softmax(z / T, -1)
            kd = kd_losses.kl_sparse(ids, t_top, s) if kind == "cache" else kd_losses.kl_full(t_full, s)
        elif route == "fused_eager":
            kd = fused.kl_sparse_logits(ids, t_top, z, T) if kind == "cache" else fused.kl_full_logits(t_full, z, T)
        else:
            kd = fused.tempered_kl_sparse(ids, t_top, z, T) if kind == "cache" else fused.tempered_kl_full(t_full, z, T)
        return (0.5 * ce(lp) + 0.5 * T * T * kd).sum()

    def timed(kind, route):
        ts = []
        for _ in range(args.reps + 2):
            z = z0.clone().requires_grad_()
            t0 = time.perf_counter()
            loss(z, kind, route).backward()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts[2:]) * 1000  # ms; the first two are warm-up (and compilation)

    res = {"setup": {**vars(args), "torch": torch.__version__}, "ms": {}}
    routes = ("t1", "t1_ce_fused", "log_softmax", "fused_eager", "fused_compiled", "ce_fused")
    for kind in ("cache", "full"):
        for route in routes:  # compile (or fail) before timing
            loss(z0.clone().requires_grad_(), kind, route).backward()
        res["ms"][kind] = {r: round(timed(kind, r), 2) for r in routes}
    res["compiled"] = not fused._FAILED
    print(f"N={N} V={V} K={K} T={T:g}, {args.threads} threads, forward + backward, median of {args.reps} (ms); "
          f"torch.compile {'worked' if res['compiled'] else 'FAILED (eager fallback timed)'}")
    print("| teacher | T=1 (CE log-probs reused) | T=1, CE+KL fused | T log-softmax route | fused eager | "
          "fused compiled | T-cost removed | T, CE+KL fused |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, ms in res["ms"].items():
        extra_before, extra_after = ms["log_softmax"] - ms["t1"], ms["fused_compiled"] - ms["t1"]
        removed = 1 - extra_after / extra_before if extra_before > 0 else float("nan")
        r = lambda k: f"{ms[k]:.1f} ({ms[k] / ms['t1']:.2f}x)"  # noqa: E731
        print(f"| {kind} | {ms['t1']:.1f} | {r('t1_ce_fused')} | {r('log_softmax')} | {r('fused_eager')} | "
              f"{r('fused_compiled')} | {removed:.0%} | {r('ce_fused')} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
