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
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


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
    assert proc.returncode == 1
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
    assert proc.returncode == 1
    assert f"{data}/val.de has 3 lines but {data}/val.en has 2" in proc.stderr
    assert files_under(out) == []


@pytest.mark.integration
def test_usage_errors_exit_2(tmp_path):
    for script in ("data_prep/prepare_multi30k.sh", "data_prep/prepare_iwslt14.sh", "scripts/decode.sh"):
        proc = run_script(script, "--no-such-flag", "1", check=False)
        assert proc.returncode == 2 and "unknown option --no-such-flag" in proc.stderr
