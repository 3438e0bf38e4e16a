"""Every option validated before any work starts: ranges, sizes against
the vocabulary, in every tool and criterion; one line naming the flag, exit 2, nothing written."""

import pytest

from tests.reliability_helpers import run_cli as _run


V = "100000"  # more than any test dictionary holds


def _files(folder):
    return sorted(p for p in folder.rglob("*")) if folder.exists() else []


DISTILL = ["--beam 0", "--nbest 0", "--max-tokens 0", "--batch-size 0", "--shard-size 0", "--temperature 0",
           "--max-len-a -1", "--threads -1", "--sampling-topp 1.5", "--sampling-topk 0", "--max-failed-fraction 2",
           f"--sampling-topk {V} --decoding sampling"]
CACHE = ["--topk 0", "--max-tokens 0", "--batch-size 0", "--flush-every 0", f"--topk {V}"]
NOISE = ["--deletion 1.5", "--substitution -0.1", "--swap nan", "--swap-window 0"]
STUDY = ["--max-update 0", "--beam 0", "--warmup-updates 0", "--max-tokens -5", "--label-smoothing 1.0", "--lrs -1", "--max-len-b -1"]

CASES = ([("distill", o) for o in DISTILL] + [("cache", o) for o in CACHE] + [("noise", o) for o in NOISE]
         + [("study", o) for o in STUDY] + [("prune", "--tolerance 0"), ("ladder", "--vocab-size 2")])


@pytest.mark.integration
@pytest.mark.parametrize("tool,option", CASES, ids=[f"{t}:{o}" for t, o in CASES])
def test_bad_option_refused_before_work(tool, option, tiny_teacher, tmp_path, capsys):
    data, ckpt, out = str(tiny_teacher.data_bin), str(tiny_teacher.checkpoint), tmp_path / "out"
    (tmp_path / "in.txt").write_text("ein Haus\n")
    (tmp_path / "ref.txt").write_text("a house\n")
    base = {
        "distill": ("fairseq_kd.cli.distill", ["--data", data, "--split", "valid", "--teacher", ckpt, "-o", str(out),
                                               "--cpu", "--no-progress"]),
        "cache": ("fairseq_kd.cli.cache", [data, "--teacher-path", ckpt, "--out-dir", str(out), "--split", "valid",
                                           "--no-progress"]),
        "noise": ("fairseq_kd.cli.noise", ["-i", str(tmp_path / "in.txt"), "-o", str(out / "noisy.txt")]),
        "study": ("fairseq_kd.cli.study", ["--data", data, "-s", "src", "-t", "tgt", "--test-ref",
                                           str(tmp_path / "ref.txt"), "--out-dir", str(out)]),
        "prune": ("fairseq_kd.cli.prune", ["-i", ckpt, "-o", str(out / "p.pt")]),
        "ladder": ("fairseq_kd.cli.ladder", []),
    }
    module, argv = base[tool]
    flag = option.split()[0]
    rc, err = _run(module, argv + option.split(), capsys)
    assert rc == 2 and "Traceback" not in err, err[-1000:]
    assert flag in err, err[-1000:]
    written = [p for p in _files(out) if p.name != ".fairseq-kd.lock"]
    assert written == [], written


CRITERIA = [  # each build sets up a task and a teacher (~2 s): one case per criterion and kind of check
    ("word_kd", "--kd-topk " + V), ("word_kd", "--kd-selection-ratio 0"), ("hybrid_kd", "--label-smoothing -0.1"),
    ("seq_kd", "--label-smoothing 1.0"), ("onpolicy_kd", "--kd-topk " + V),
]


@pytest.mark.integration
@pytest.mark.parametrize("criterion,option", CRITERIA, ids=[f"{c}:{o}" for c, o in CRITERIA])
def test_criterion_options_checked_at_build(criterion, option, tiny_teacher):
    from tests import helpers

    with pytest.raises(ValueError, match=option.split()[0]):
        helpers.build_components(tiny_teacher.data_bin, ["--criterion", criterion, "--teacher-path",
                                                         str(tiny_teacher.checkpoint), *option.split()])


@pytest.mark.integration
def test_task_noise_rates_checked_at_setup(tiny_teacher):
    from fairseq_kd.errors import KDInputError
    from tests import helpers

    with pytest.raises(KDInputError, match="deletion rate 2.0 is not a probability"):
        helpers.build_components(tiny_teacher.data_bin, ["--criterion", "label_smoothed_cross_entropy",
                                                         "--noise-deletion", "2"])
