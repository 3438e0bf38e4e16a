"""The data_prep/*.sh pipelines on miniature copies of the real formats (WIT3 train.tags, XML, SGML)."""
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_script(script, *args, check=True):
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / script), *map(str, args)], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def files_under(folder: Path):
    """Outputs under ``folder`` (the run's lock file is no output)."""
    return [p for p in folder.rglob("*") if p.is_file() and p.name != ".fairseq-kd.lock"] if folder.exists() else []


def n_binarized(prefix: Path) -> int:
    from fairseq.data import data_utils
    return len(data_utils.load_indexed_dataset(str(prefix), None))


WORDS = "Haus Katze Hund läuft schnell langsam rot blau ein der die das".split()


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_train_tags(folder: Path, n_talks=3, per_talk=31, seed=0, extra_de_line=False):
    """A WIT3-style train.tags pair; returns the (de, en) sentences a correct extractor yields."""
    rng = random.Random(seed)
    de, en, sents = [], [], []
    for t in range(n_talks):
        meta = [f"<url>http://www.ted.com/talks/talk{t}.html</url>", f"<keywords>talks, t{t}</keywords>",
                f"<speaker>Speaker {t}</speaker>", f"<talkid>{t}</talkid>"]
        de += meta
        en += meta
        for tag in ("title", "description"):
            de.append(f"<{tag}>Titel {tag} {t}</{tag}>")
            en.append(f"<{tag}>Title {tag} {t}</{tag}>")
            sents.append((f"Titel {tag} {t}", f"Title {tag} {t}"))
        for _ in range(per_talk):
            n = rng.randint(2, 8)
            s, e = sentence(rng, n), sentence(rng, n).upper()
            de.append(s)
            en.append(e)
            sents.append((s, e))
    if extra_de_line:
        de.insert(9, "eine Zeile zu viel")
    (folder / "train.tags.de-en.de").write_text("\n".join(de) + "\n", encoding="utf-8")
    (folder / "train.tags.de-en.en").write_text("\n".join(en) + "\n", encoding="utf-8")
    return sents


def write_xml(path: Path, segs, kind):
    body = "\n".join(f'<seg id="{i + 1}"> {s} </seg>' for i, s in enumerate(segs))
    path.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<mteval>\n<{kind} setid="x" srclang="german">\n'
                    f'<doc docid="1" genre="lectures">\n<url>u</url>\n<description>d</description>\n<talkid>1</talkid>\n'
                    f'<title>t</title>\n{body}\n</doc>\n</{kind}>\n</mteval>\n', encoding="utf-8")


TEST_SETS = {"IWSLT14.TED.dev2010": 3, "IWSLT14.TEDX.dev2012": 4, "IWSLT14.TED.tst2010": 5,
             "IWSLT14.TED.tst2011": 2, "IWSLT14.TED.tst2012": 1}


def write_test_xml(folder: Path, seed=1):
    rng = random.Random(seed)
    test = []
    for name, n in TEST_SETS.items():  # in the recipe's concatenation order
        pairs = [(sentence(rng, 4) + " &amp; mehr", sentence(rng, 4)) for _ in range(n)]
        write_xml(folder / f"{name}.de-en.de.xml", [p[0] for p in pairs], "srcset")
        write_xml(folder / f"{name}.de-en.en.xml", [p[1] for p in pairs], "refset")
        test += [(p[0].replace("&amp;", "&"), p[1]) for p in pairs]
    return test


@pytest.mark.integration
def test_iwslt14_miniature_split_sizes(tmp_path):
    orig = tmp_path / "orig"
    orig.mkdir()
    sents = write_train_tags(orig)          # 3 talks x (2 title/description + 31) = 99 pairs
    test = write_test_xml(orig)
    out = tmp_path / "iwslt"
    run_script("data_prep/prepare_iwslt14.sh", "--data-dir", orig, "--out-dir", out, "--vocab-size", 60,
               "--workers", 1)
    read = lambda p: p.read_text(encoding="utf-8").splitlines()  # noqa: E731
    assert len(sents) == 99
    valid = [p for i, p in enumerate(sents, 1) if i % 23 == 0]   # lines 23, 46, 69, 92
    train = [p for i, p in enumerate(sents, 1) if i % 23 != 0]
    assert list(zip(read(out / "raw/valid.de"), read(out / "raw/valid.en"))) == valid and len(valid) == 4
    assert list(zip(read(out / "raw/train.de"), read(out / "raw/train.en"))) == train
    assert list(zip(read(out / "raw/test.de"), read(out / "raw/test.en"))) == test
    assert len(test) == sum(TEST_SETS.values()) == 15
    for split, n in (("train", 95), ("valid", 4), ("test", 15)):
        for lang in ("de", "en"):
            assert len(read(out / f"spm/{split}.{lang}")) == n
            assert n_binarized(out / f"bin/{split}.de-en.{lang}") == n
    assert (out / "spm.model").exists() and (out / "bin/dict.de.txt").read_text() == (out / "bin/dict.en.txt").read_text()
    # idempotent: a second run skips every stage
    again = run_script("data_prep/prepare_iwslt14.sh", "--data-dir", orig, "--out-dir", out, "--vocab-size", 60,
                       "--workers", 1)
    assert all(f"stage {k}: skip" in again.stderr for k in (1, 2, 3, 4))


@pytest.mark.integration
def test_iwslt14_misaligned_train_tags_leaves_nothing(tmp_path):
    orig = tmp_path / "orig"
    orig.mkdir()
    write_train_tags(orig, extra_de_line=True)
    write_test_xml(orig)
    out = tmp_path / "iwslt"
    proc = run_script("data_prep/prepare_iwslt14.sh", "--data-dir", orig, "--out-dir", out, check=False)
    assert proc.returncode == 2
    assert "train.tags.de-en.de has 100 sentences" in proc.stderr and "has 99" in proc.stderr
    assert files_under(out) == []


@pytest.mark.integration
def test_multi30k_misaligned_input_refused_before_writing(tmp_path):
    data = tmp_path / "m30k"
    data.mkdir()
    for name, n_de, n_en in (("train", 6, 6), ("val", 3, 2), ("test_2016_flickr", 2, 2)):
        (data / f"{name}.de").write_text("ein Hund\n" * n_de)
        (data / f"{name}.en").write_text("a dog\n" * n_en)
    out = tmp_path / "out"
    proc = run_script("data_prep/prepare_multi30k.sh", "--data-dir", data, "--out-dir", out, check=False)
    assert proc.returncode == 2
    assert f"{data}/val.de has 3 lines but {data}/val.en has 2" in proc.stderr
    assert files_under(out) == []


@pytest.mark.integration
def test_usage_errors_exit_2(tmp_path):
    for script in ("data_prep/prepare_multi30k.sh", "data_prep/prepare_iwslt14.sh", "scripts/decode.sh"):
        proc = run_script(script, "--no-such-flag", "1", check=False)
        assert proc.returncode == 2 and "unknown option --no-such-flag" in proc.stderr


def write_sgm(path: Path, docs, kind):
    out = [f'<{kind} setid="newstest2014" srclang="any">']
    for docid, segs in docs:
        out.append(f'<doc sysid="ref" docid="{docid}" genre="news" origlang="de">')
        out += [f'<seg id="{i + 1}">{s}</seg>' for i, s in enumerate(segs)]
        out.append("</doc>")
    path.write_text("\n".join(out + [f"</{kind}>"]) + "\n", encoding="utf-8")


def write_wmt_miniature(root: Path, with_valid: bool):
    rng = random.Random(5)
    corpora = []
    for name, n in (("europarl", 30), ("commoncrawl", 20)):
        pairs = [(sentence(rng, k), sentence(rng, k).upper()) for k in (rng.randint(1, 6) for _ in range(n))]
        pairs[3] = ("ein", "A B C D")  # ratio 4 > 1.5: dropped by cleaning
        (root / f"{name}.de").write_text("".join(p[0] + "\n" for p in pairs), encoding="utf-8")
        (root / f"{name}.en").write_text("".join(p[1] + "\n" for p in pairs), encoding="utf-8")
        corpora.append((root / name, [p for i, p in enumerate(pairs) if i != 3]))
    docs_de = [("d1", ["Satz eins & zwei.", "Satz drei."]), ("d2", ["Satz vier."])]
    docs_en = [("d1", ["Sentence one & two.", "Sentence three."]), ("d2", ["Sentence four."])]
    write_sgm(root / "newstest2014-deen-src.de.sgm", docs_de, "srcset")
    write_sgm(root / "newstest2014-deen-ref.en.sgm", docs_en, "refset")
    if with_valid:
        (root / "newstest2013.de").write_text("Gültig eins.\nGültig zwei.\n", encoding="utf-8")
        (root / "newstest2013.en").write_text("Valid one.\nValid two.\n", encoding="utf-8")
    return corpora


@pytest.mark.integration
def test_wmt14_miniature_train_valid_test(tmp_path):
    corpora = write_wmt_miniature(tmp_path, with_valid=True)
    out = tmp_path / "wmt"
    run_script("data_prep/prepare_wmt14.sh", "--out-dir", out, "--train-corpora", ",".join(str(c[0]) for c in corpora),
               "--test-dir", tmp_path, "--valid-dir", tmp_path, "--stop-stage", 1)
    read = lambda p: p.read_text(encoding="utf-8").splitlines()  # noqa: E731
    expected_train = corpora[0][1] + corpora[1][1]
    assert list(zip(read(out / "raw/train.de"), read(out / "raw/train.en"))) == expected_train
    assert read(out / "raw/valid.en") == ["Valid one.", "Valid two."]
    assert read(out / "raw/test.de") == ["Satz eins & zwei.", "Satz drei.", "Satz vier."]
    assert read(out / "raw/test.en") == ["Sentence one & two.", "Sentence three.", "Sentence four."]


@pytest.mark.integration
def test_wmt14_without_newstest2013_carves_or_refuses(tmp_path):
    corpora = write_wmt_miniature(tmp_path, with_valid=False)
    args = ["--train-corpora", ",".join(str(c[0]) for c in corpora), "--test-dir", tmp_path,
            "--valid-dir", tmp_path / "nowhere", "--stop-stage", 1]
    proc = run_script("data_prep/prepare_wmt14.sh", "--out-dir", tmp_path / "a", "--valid-fallback", "error",
                      *args, check=False)
    assert proc.returncode == 1 and "newstest2013 not found" in proc.stderr
    assert files_under(tmp_path / "a") == []
    proc = run_script("data_prep/prepare_wmt14.sh", "--out-dir", tmp_path / "b", "--carve-valid", 12, *args)
    assert "WARNING: newstest2013 not found" in proc.stderr
    train = (tmp_path / "b/raw/train.de").read_text().splitlines()
    valid = (tmp_path / "b/raw/valid.de").read_text().splitlines()
    every = 48 // 12
    assert len(train) + len(valid) == 48 and len(valid) == 48 // every == 12
