"""Cost of on-the-fly noise: batches/s of a noisy vs a clean LanguagePairDataset.

Data: Multi30k train (29k pairs, whitespace words) from ../shared/data when present, else
synthetic sentences of the same size. Both runs build the same batches (fixed order, 64
sentences each, collater included, teacher clean input on); the ratio noisy/clean time is
printed with the offline noise throughput (lines/s of fairseq_kd.noise.noise_line).

    python bench/bench_noise.py [--data ../shared/data] [--rate 0.1] [--repeat 3]
"""
import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_pairs(data_dir: Path, n: int = 29000):
    src, tgt = data_dir / "multi30k" / "train.de", data_dir / "multi30k" / "train.en"
    if src.exists():
        from fairseq_kd.fileio import read_lines

        return read_lines(src), read_lines(tgt), "multi30k train"
    rng = random.Random(0)
    make = lambda: " ".join(f"w{rng.randrange(8000)}" for _ in range(rng.randint(5, 25)))  # noqa: E731
    return [make() for _ in range(n)], [make() for _ in range(n)], "synthetic"


def build_dataset(src_lines, tgt_lines):
    from fairseq.data import Dictionary, LanguagePairDataset

    d = Dictionary()
    for line in src_lines + tgt_lines:
        for w in line.split():
            d.add_symbol(w)
    enc = lambda line: torch.tensor([d.index(w) for w in line.split()] + [d.eos()])  # noqa: E731
    src = [enc(l) for l in src_lines]
    tgt = [enc(l) for l in tgt_lines]
    return LanguagePairDataset(src, np.array([len(s) for s in src]), d, tgt, np.array([len(t) for t in tgt]), d,
                               shuffle=False)


def time_epoch(ds, bsz=64):
    t0 = time.perf_counter()
    for start in range(0, len(ds), bsz):
        ds.collater([ds[i] for i in range(start, min(start + bsz, len(ds)))])
    return time.perf_counter() - t0


def main():
    import fairseq_kd  # noqa: F401
    from fairseq_kd import noise as N
    from fairseq_kd.data.noisy_dataset import NoisyDatasetConfig, NoisyLanguagePairDataset

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("FAIRSEQ_KD_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--rate", type=float, default=0.1, help="rate of each of deletion, substitution, swap")
    p.add_argument("--repeat", type=int, default=3, help="epochs timed (best of)")
    args = p.parse_args()

    src, tgt, name = load_pairs(Path(args.data))
    clean = build_dataset(src, tgt)
    cfg = N.NoiseConfig(args.rate, args.rate, args.rate, 3)
    t0 = time.perf_counter()
    noisy = NoisyLanguagePairDataset(clean, NoisyDatasetConfig(cfg, "source", "clean", 1))
    setup = time.perf_counter() - t0
    t_clean = min(time_epoch(clean) for _ in range(args.repeat))
    t_noisy = []
    for epoch in range(1, args.repeat + 1):
        noisy.set_epoch(epoch)
        t_noisy.append(time_epoch(noisy))
    t_noisy = min(t_noisy)
    sampler = N.UnigramSampler.from_corpus(N.split_words(l.split(), "word") for l in src)
    t0 = time.perf_counter()
    for i, line in enumerate(src):
        N.noise_line(line, cfg, 1, i, "source", "word", sampler)
    t_offline = time.perf_counter() - t0
    out = {"data": name, "pairs": len(src), "rate": args.rate, "torch_threads": torch.get_num_threads(),
           "clean_epoch_s": round(t_clean, 3), "noisy_epoch_s": round(t_noisy, 3),
           "noisy_over_clean": round(t_noisy / t_clean, 2), "sampler_setup_s": round(setup, 3),
           "offline_lines_per_s": round(len(src) / t_offline)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
