"""Benchmark: relu vs GLU vs adaptive capacity (gated, then pruned), training step and generation.

For each ladder size, four models are built through fairseq (10k joint vocabulary, shared
embeddings): ``transformer_relu_<N>`` (baseline), ``transformer_glu_<N>`` (matched
params), the same with ``--adaptive-capacity`` whose gates are forced shut on a random
``--closed-fraction`` of the FFN units (what a penalised run leaves; speed does not
depend on weight values), and that model after ``fairseq-kd-prune``'s state-dict pruning.
It times a training step (forward, NLL + capacity penalty, backward, Adam) and beam
search with fairseq's ``SequenceGenerator`` (fixed output length), and prints the median
times and their ratios to the relu baseline of the same size, measured in this process.

    nice python bench/bench_capacity.py --sizes 3m 9m --threads 1 --json bench_capacity.json
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fairseq_kd  # noqa: E402,F401
from fairseq_kd.models import ladder  # noqa: E402
from fairseq_kd.models.pruning import prune_state_dict, widths_arg  # noqa: E402


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("models")
    g.add_argument("--sizes", nargs="+", default=["3m", "9m"], help="ladder sizes to compare")
    g.add_argument("--vocab-size", type=int, default=10000, help="joint dictionary size")
    g.add_argument("--closed-fraction", type=float, default=0.5, help="fraction of FFN units whose gate is shut")
    w = p.add_argument_group("workload")
    w.add_argument("--batch-size", type=int, default=32, help="sentences per training step")
    w.add_argument("--src-len", type=int, default=20, help="source length (tokens)")
    w.add_argument("--tgt-len", type=int, default=20, help="target / generated length (tokens)")
    w.add_argument("--gen-batch-size", type=int, default=16, help="sentences per generation batch")
    w.add_argument("--beam", type=int, default=4, help="beam size")
    w.add_argument("--steps", type=int, default=5, help="timed repetitions (median reported)")
    w.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    w.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    w.add_argument("--seed", type=int, default=1)
    o = p.add_argument_group("output")
    o.add_argument("--json", default=None, help="also write the results here")
    return p


def _models(size: str, vocab: int, closed: float, seed: int):
    """relu, glu, adaptive (gates partly shut) and its pruned copy, as fairseq builds them."""
    torch.manual_seed(seed)
    relu = ladder.build_model(f"transformer_relu_{size}", vocab)
    glu = ladder.build_model(f"transformer_glu_{size}", vocab)
    adaptive = ladder.build_model(f"transformer_glu_{size}", vocab, ["--adaptive-capacity"])
    g = torch.Generator().manual_seed(seed)
    for _, fc1 in adaptive.ffn_inputs():
        shut = torch.rand(fc1.hidden, generator=g) < closed
        fc1.gate.set_log_alpha(torch.where(shut, torch.tensor(-20.0), torch.tensor(20.0)))
    state, widths, _ = prune_state_dict(adaptive.state_dict(), "glu")
    pruned = ladder.build_model(f"transformer_glu_{size}", vocab, [
        "--encoder-ffn-widths", widths_arg(widths["encoder"]), "--decoder-ffn-widths", widths_arg(widths["decoder"])])
    pruned.load_state_dict(state, strict=True)
    return {"relu": relu, "glu": glu, "adaptive": adaptive, "adaptive_pruned": pruned}


def interleaved_medians(fns: dict, steps: int, warmup: int) -> dict:
    """Median seconds of each callable, timed round-robin so background load hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def train_step_fn(model, args, vocab: int):
    """One training step (forward, NLL + capacity penalty, backward, Adam) as a closure."""
    g = torch.Generator().manual_seed(args.seed)
    src = torch.randint(4, vocab, (args.batch_size, args.src_len), generator=g)
    tgt = torch.randint(4, vocab, (args.batch_size, args.tgt_len), generator=g)
    prev = torch.cat([torch.full((args.batch_size, 1), 2), tgt[:, :-1]], dim=1)
    lengths = torch.full((args.batch_size,), args.src_len)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step():
        opt.zero_grad()
        lp = model.get_normalized_probs(model(src, lengths, prev), log_probs=True)  # B x T x V
        loss = F.nll_loss(lp.view(-1, lp.size(-1)), tgt.view(-1), reduction="sum")
        penalty, _ = model.capacity_loss()
        (loss + penalty * tgt.numel()).backward()
        opt.step()

    return step


def generation_fn(model, args, vocab: int):
    """Beam search of one batch to a fixed length as a closure."""
    from fairseq.sequence_generator import SequenceGenerator

    dictionary = ladder._VocabTask(vocab).target_dictionary
    gen = SequenceGenerator([model.eval()], dictionary, beam_size=args.beam, max_len_a=0,
                            max_len_b=args.tgt_len, min_len=args.tgt_len)
    g = torch.Generator().manual_seed(args.seed)
    src = torch.randint(4, vocab, (args.gen_batch_size, args.src_len), generator=g)
    sample = {"net_input": {"src_tokens": src, "src_lengths": torch.full((args.gen_batch_size,), args.src_len)}}

    def run():
        with torch.no_grad():
            gen.generate([model], sample)

    return run


def main(argv=None):
    args = get_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for size in args.sizes:
        models = _models(size, args.vocab_size, args.closed_fraction, args.seed)
        train = interleaved_medians({n: train_step_fn(m, args, args.vocab_size) for n, m in models.items()},
                                    args.steps, args.warmup)
        gen = interleaved_medians({n: generation_fn(m, args, args.vocab_size) for n, m in models.items()},
                                  args.steps, args.warmup)
        base = {}
        for name, model in models.items():
            train_s, gen_s = train[name], gen[name]
            row = {"size": size, "model": name, "params": ladder.num_params(model),
                   "train_step_ms": 1000 * train_s, "gen_ms": 1000 * gen_s,
                   "gen_tokens_per_s": args.gen_batch_size * args.tgt_len / gen_s}
            if name == "relu":
                base = row
            row["train_time_vs_relu"] = row["train_step_ms"] / base["train_step_ms"]
            row["gen_speed_vs_relu"] = row["gen_tokens_per_s"] / base["gen_tokens_per_s"]
            results.append(row)
            print(f"{size:>5} {name:<16} params {row['params']:>11,}  train step {row['train_step_ms']:8.1f} ms "
                  f"(x{row['train_time_vs_relu']:.2f} time)  generation {row['gen_tokens_per_s']:8.1f} tok/s "
                  f"(x{row['gen_speed_vs_relu']:.2f} speed)", flush=True)
    sig = (f"threads:{args.threads}|bsz:{args.batch_size}|len:{args.src_len}/{args.tgt_len}|beam:{args.beam}"
           f"|gen_bsz:{args.gen_batch_size}|closed:{args.closed_fraction}|steps:{args.steps}|torch:{torch.__version__}")
    print("\n| size | model | params | train step (ms) | train time / relu | generation (tok/s) | gen speed / relu |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['size']} | {r['model']} | {r['params']:,} | {r['train_step_ms']:.1f} | "
              f"{r['train_time_vs_relu']:.2f} | {r['gen_tokens_per_s']:.1f} | {r['gen_speed_vs_relu']:.2f} |")
    print(f"\nsignature: {sig}")
    if args.json:
        Path(args.json).write_text(json.dumps({"signature": sig, "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
