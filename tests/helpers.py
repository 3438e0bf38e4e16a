"""Tiny end-to-end helpers: synthetic parallel data, in-process preprocess/train/generate.

In the spirit of fairseq's own tests/utils.py and sockeye's test helpers: everything runs
in this process on CPU in seconds, through the real fairseq entry points.
"""
import contextlib
import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
USER_DIR = str(REPO / "fairseq_kd")

# A small transformer that learns the copy task in a few seconds on CPU.
TINY_ARCH_ARGS = [
    "--arch", "transformer",
    "--encoder-layers", "1", "--decoder-layers", "1",
    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
    "--share-all-embeddings", "--dropout", "0.0",
]


def synthetic_pairs(n: int, seed: int, transform: str = "copy", vocab: int = 12,
                    min_len: int = 2, max_len: int = 7) -> List[tuple]:
    """``n`` (source, target) sentences over words ``w0..w{vocab-1}``; target = copy or reverse."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = [f"w{rng.randrange(vocab)}" for _ in range(rng.randint(min_len, max_len))]
        tgt = words if transform == "copy" else list(reversed(words))
        pairs.append((" ".join(words), " ".join(tgt)))
    return pairs


def write_parallel(folder: Path, split: str, pairs: Sequence[tuple], src: str = "src", tgt: str = "tgt") -> None:
    """Write ``split.src`` / ``split.tgt`` aligned by line."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.{src}").write_text("".join(p[0] + "\n" for p in pairs))
    (folder / f"{split}.{tgt}").write_text("".join(p[1] + "\n" for p in pairs))


def make_synthetic_corpus(folder: Path, transform: str = "copy", n_train: int = 600,
                          n_valid: int = 40, n_test: int = 40, seed: int = 1) -> Path:
    """Raw text corpus with train/valid/test splits in ``folder``."""
    write_parallel(folder, "train", synthetic_pairs(n_train, seed, transform))
    write_parallel(folder, "valid", synthetic_pairs(n_valid, seed + 1, transform))
    write_parallel(folder, "test", synthetic_pairs(n_test, seed + 2, transform))
    return folder


def preprocess(raw: Path, dest: Path, src: str = "src", tgt: str = "tgt",
               splits=("train", "valid", "test"), extra: Optional[List[str]] = None) -> Path:
    """Binarize ``raw`` with fairseq-preprocess (joined dictionary) into ``dest``."""
    from fairseq import options
    from fairseq_cli import preprocess as fs_preprocess

    parser = options.get_preprocessing_parser()
    argv = ["--source-lang", src, "--target-lang", tgt, "--destdir", str(dest),
            "--joined-dictionary", "--workers", "1"]
    for split in splits:
        argv += [f"--{'trainpref' if split == 'train' else 'validpref' if split == 'valid' else 'testpref'}",
                 str(raw / split)]
    args = parser.parse_args(argv + (extra or []))
    with contextlib.redirect_stdout(io.StringIO()):
        fs_preprocess.main(args)
    return dest


def train(data_bin: Path, save_dir: Path, extra: Sequence[str] = (), task: str = "translation",
          arch_args: Sequence[str] = TINY_ARCH_ARGS, max_epoch: int = 20, lr: float = 5e-3,
          max_tokens: int = 1000, src: str = "src", tgt: str = "tgt") -> Path:
    """Train in-process through ``fairseq_cli.train.main``; returns ``checkpoint_last.pt``."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli import train as fs_train

    argv = [str(data_bin), "--user-dir", USER_DIR, "--task", task,
            "--source-lang", src, "--target-lang", tgt, *arch_args,
            "--optimizer", "adam", "--lr", str(lr), "--lr-scheduler", "fixed",
            "--max-tokens", str(max_tokens), "--max-epoch", str(max_epoch),
            "--save-dir", str(save_dir), "--no-epoch-checkpoints", "--no-progress-bar",
            "--log-format", "simple", "--log-interval", "1000", "--seed", "1",
            "--num-workers", "0", "--distributed-world-size", "1", "--cpu", *extra]
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, argv)
    fs_train.main(convert_namespace_to_omegaconf(args))
    return Path(save_dir) / "checkpoint_last.pt"


def generate(data_bin: Path, checkpoint: Path, split: str = "test", extra: Sequence[str] = (),
             beam: int = 1, src: str = "src", tgt: str = "tgt") -> List[str]:
    """Decode ``split`` with fairseq-generate in-process; hypotheses in input order."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli import generate as fs_generate

    argv = [str(data_bin), "--user-dir", USER_DIR, "--path", str(checkpoint),
            "--gen-subset", split, "--beam", str(beam), "--source-lang", src, "--target-lang", tgt,
            "--max-tokens", "2000", "--cpu", "--num-workers", "0",
            "--required-batch-size-multiple", "1",  # else fairseq drops a last partial batch (fairseq#5036)
            *extra]
    parser = options.get_generation_parser()
    args = options.parse_args_and_arch(parser, argv)
    out = io.StringIO()
    fs_generate._main(convert_namespace_to_omegaconf(args), output_file=out)
    from fairseq_kd.hypotheses import parse_hypotheses

    hyps = parse_hypotheses(out.getvalue())
    return [hyps[i] for i in sorted(hyps)]


@dataclass
class TinyTeacher:
    """A trained tiny teacher: its raw corpus, binarized data and checkpoint."""
    raw: Path
    data_bin: Path
    checkpoint: Path


def make_tiny_teacher(root: Path, transform: str = "copy", max_epoch: int = 30) -> TinyTeacher:
    """Synthetic corpus -> binarized data -> a teacher that mostly solves ``transform``
    (about 85% exact copies of the test set; ~400 small updates)."""
    raw = make_synthetic_corpus(Path(root) / "raw", transform)
    data_bin = preprocess(raw, Path(root) / "bin")
    ckpt = train(data_bin, Path(root) / "teacher", max_epoch=max_epoch, max_tokens=500)
    return TinyTeacher(raw=raw, data_bin=data_bin, checkpoint=ckpt)


def build_components(data_bin: Path, extra: Sequence[str] = (), arch_args: Sequence[str] = TINY_ARCH_ARGS,
                     src: str = "src", tgt: str = "tgt", seed: int = 1, cpu: bool = True):
    """(task, model, criterion) built through fairseq-train's own argument parsing, untrained
    (``cpu=False``: without ``--cpu``, so a kd_translation teacher goes to the GPU when there is one)."""
    import torch
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = [str(data_bin), "--user-dir", USER_DIR, "--task", "kd_translation", "--source-lang", src,
            "--target-lang", tgt, *arch_args, *(["--cpu"] if cpu else []), "--seed", str(seed), *extra]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    cfg = convert_namespace_to_omegaconf(args)
    torch.manual_seed(seed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return task, model, criterion


def first_batch(task, split: str = "train", n: int = 8):
    """A collated batch of the first ``n`` sentences of ``split`` (loads the split if needed)."""
    if split not in task.datasets:
        task.load_dataset(split)
    ds = task.dataset(split)
    return ds.collater([ds[i] for i in range(min(n, len(ds)))])


def run_both_loss_routes(monkeypatch, run):
    """``run()`` with ``FAIRSEQ_KD_COMPILE=0`` (the log-softmax route), then ``auto`` (fairseq_kd.losses.fused's
    kernels, run eagerly here and recorded): returns (names of the kernels called, {mode: run()})."""
    from fairseq_kd.losses import fused

    calls = []
    monkeypatch.setattr(fused, "_fn", lambda name: calls.append(name) or fused._EAGER[name])
    monkeypatch.setattr(fused, "_FAILED", set())
    out = {}
    for mode in ("0", "auto"):
        monkeypatch.setenv("FAIRSEQ_KD_COMPILE", mode)
        out[mode] = run()
    return calls, out


def run_study_one_thread(study):
    """``study.run()`` with torch on one thread (tiny models: fastest, and robust to a busy machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return study.run(progress=False)
    finally:
        torch.set_num_threads(threads)


def load_results_tool(name: str):
    """A script of docs/results/tools (not a package) imported as a module, for its tests."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "docs" / "results" / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
