"""scripts/recipes/*.sh as dry runs on miniature data in the real formats (WIT3 train.tags and
XML for IWSLT14; plain corpora and SGML for WMT14): the data stage really runs, and every GPU
command the recipe prints is accepted by the parser of the tool it calls."""
import os
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_prep_scripts import sentence, write_sgm, write_test_xml, write_train_tags

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def dry_run(recipe, *args):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "recipes" / recipe), "--dry-run", "true", "--device", "cuda",
                           "--nprocs", "2", *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ ")]


def check_parses(cmds):
    """Each printed command line is valid for its tool (fairseq's own parsers, ours)."""
    from fairseq import options

    from fairseq_kd.cli import cache as cache_cli
    from fairseq_kd.cli import distill as distill_cli
    from fairseq_kd.cli import score as score_cli

    tools = {}
    for cmd in cmds:
        tool, argv = cmd[0], cmd[1:]
        if tool == "fairseq-train":
            options.parse_args_and_arch(options.get_training_parser(), argv)
        elif tool == "fairseq-generate":
            options.parse_args_and_arch(options.get_generation_parser(), argv)
        elif tool == "fairseq-kd-cache":
            cache_cli.get_parser().parse_args(argv)
        elif tool == "fairseq-kd-distill":
            distill_cli.get_parser().parse_args(argv)
        elif tool == "fairseq-kd-score":
            score_cli.get_parser().parse_args(argv)
        elif tool == "bash" and argv[0] == str(REPO / "scripts" / "decode.sh"):
            tool = "decode.sh"
            check_decode(argv[1:])
        else:
            raise AssertionError(f"unexpected command {cmd}")
        tools[tool] = tools.get(tool, 0) + 1
    return tools


def check_decode(argv):
    """scripts/decode.sh's flags are its option variables, and the fairseq-generate command it builds from
    them (its flags after --) parses."""
    from fairseq import options

    declared = set(re.findall(r"^([a-z_]+)=", (REPO / "scripts" / "decode.sh").read_text(), re.M))
    ours, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    opts = dict(zip(ours[::2], ours[1::2]))
    assert len(ours) % 2 == 0 and all(k.startswith("--") and k[2:].replace("-", "_") in declared for k in opts), ours
    options.parse_args_and_arch(options.get_generation_parser(), [
        opts["--data-bin"], "--path", opts["--checkpoint"], "--gen-subset", opts["--subset"], "--source-lang",
        opts["--src"], "--target-lang", opts["--tgt"], "--beam", opts["--beam"], "--max-len-a", opts["--max-len-a"],
        "--max-len-b", opts["--max-len-b"], "--max-tokens", opts["--max-tokens"], "--required-batch-size-multiple",
        "1", *extra])


def test_iwslt14_recipe_dry_run(tmp_path):
    orig = tmp_path / "orig"
    orig.mkdir()
    write_train_tags(orig)
    write_test_xml(orig)
    work = tmp_path / "w"
    cmds = dry_run("iwslt14_deen.sh", "--data-dir", orig, "--work-dir", work, "--vocab-size", 60, "--bf16",
                   "--students", "transformer_relu_9m transformer_glu_20m")
    assert (work / "data" / "bin" / "train.de-en.de.bin").exists()  # stage 0 really prepared the data
    trains = [c for c in cmds if c[0] == "fairseq-train"]
    assert trains[0][trains[0].index("--arch") + 1] == "transformer_iwslt_de_en"  # fairseq's IWSLT teacher
    assert all("--bf16" in c and c[c.index("--distributed-world-size") + 1] == "2" for c in trains)
    students = {(c[c.index("--arch") + 1], c[c.index("--criterion") + 1]) for c in trains[1:]}
    assert students == {(a, crit) for a in ("transformer_relu_9m", "transformer_glu_20m")
                        for crit in ("label_smoothed_cross_entropy", "word_kd", "hybrid_kd")}
    # word reads the merged cache of the gold data; hybrid (the study's, main.sh's) is hybrid_kd on the distilled
    # corpus reading the merged cache of that corpus (it was hybrid_online on the full teacher distribution)
    words = [c for c in trains if "word_kd" in c]
    assert len(words) == 2 and all(c[1] == str(work / "data" / "bin") and
                                   c[c.index("--teacher-cache") + 1] == str(work / "cache") for c in words)
    hybrids = [c for c in trains if "hybrid_kd" in c]
    assert len(hybrids) == 2 and all(c[1] == str(work / "distilled" / "bin") and
                                     c[c.index("--teacher-cache") + 1] == str(work / "cache_distilled") and
                                     c[c.index("--seq-kd-targets") + 1] == "data" and "--seq-kd-decoding" not in c
                                     for c in hybrids)
    caches = {c[1] for c in cmds if c[0] == "fairseq-kd-cache"}
    assert caches == {str(work / "data" / "bin"), str(work / "distilled" / "bin")}
    distills = [c for c in cmds if c[0] == "fairseq-kd-distill"]
    assert distills and all("--bf16" in c and "--fp16" not in c for c in distills)  # bf16 stays bf16
    hybrid = [c for c in trains if "hybrid_kd" in c]
    assert hybrid and all(c[c.index("--hybrid-gate") + 1] == "fixed" for c in hybrid)
    check_test_bleu(cmds, work, "en")
    tools = check_parses(cmds)
    assert tools == {"fairseq-train": 9, "decode.sh": 9, "fairseq-kd-score": 9, "fairseq-kd-cache": 6,
                     "fairseq-kd-distill": 3}


def check_test_bleu(cmds, work, tgt):
    """Teacher and students: test BLEU as the study's (every sentence through decode.sh, one length limit,
    detokenized with the data's spm.model, fairseq-kd-score against the raw reference, a JSON beside each);
    training and validation see every sentence too."""
    decodes = [c[1:] for c in cmds if c[0] == "bash" and c[1].endswith("/decode.sh")]
    scores = [c for c in cmds if c[0] == "fairseq-kd-score"]
    assert len(decodes) == len(scores) == len([c for c in cmds if c[0] == "fairseq-train"])
    flag = lambda c, f: c[c.index(f) + 1]  # noqa: E731
    for dec, score in zip(decodes, scores):
        assert flag(dec, "--subset") == "test" and flag(dec, "--max-len-a") == "1.2" and flag(dec, "--max-len-b") == "10"
        assert flag(dec, "--spm-model") == str(work / "data" / "spm.model") and flag(dec, "--tgt") == tgt
        assert flag(score, "-r") == str(work / "data" / "raw" / f"test.{tgt}") and flag(score, "-i") == flag(dec, "--out")
        assert flag(score, "-o").endswith("/test.json")
    assert flag(decodes[0], "--checkpoint") == str(work / "teacher" / "checkpoint_best.pt")
    assert all(flag(c, "--required-batch-size-multiple") == "1" for c in cmds if c[0] == "fairseq-train")
    assert not any(c[0] == "fairseq-generate" for c in cmds)


def test_wmt14_recipe_dry_run(tmp_path):
    rng = random.Random(3)
    prefix = tmp_path / "europarl"
    pairs = [(sentence(rng, k), sentence(rng, k).upper()) for k in (rng.randint(1, 6) for _ in range(60))]
    (tmp_path / "europarl.en").write_text("".join(p[1] + "\n" for p in pairs), encoding="utf-8")
    (tmp_path / "europarl.de").write_text("".join(p[0] + "\n" for p in pairs), encoding="utf-8")
    write_sgm(tmp_path / "newstest2014-deen-src.en.sgm", [("d1", ["One & two.", "Three."])], "srcset")
    write_sgm(tmp_path / "newstest2014-deen-ref.de.sgm", [("d1", ["Eins & zwei.", "Drei."])], "refset")
    (tmp_path / "newstest2013.en").write_text("Valid one.\nValid two.\n", encoding="utf-8")
    (tmp_path / "newstest2013.de").write_text("Gültig eins.\nGültig zwei.\n", encoding="utf-8")
    work = tmp_path / "w"
    cmds = dry_run("wmt14_ende.sh", "--train-corpora", prefix, "--test-dir", tmp_path, "--valid-dir", tmp_path,
                   "--work-dir", work, "--vocab-size", 60, "--students", "transformer_relu_44m", "--methods", "none word")
    assert (work / "data" / "raw" / "test.en").read_text().splitlines() == ["One & two.", "Three."]
    teacher = cmds[0]
    assert teacher[teacher.index("--arch") + 1] == "transformer_vaswani_wmt_en_de_big" and "--fp16" in teacher
    check_test_bleu(cmds, work, "de")
    assert check_parses(cmds) == {"fairseq-train": 3, "decode.sh": 3, "fairseq-kd-score": 3, "fairseq-kd-cache": 3}
