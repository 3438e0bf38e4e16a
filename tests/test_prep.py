"""Unit tests of fairseq_kd.prep: aligned I/O, cleaning, WIT3/XML/SGML extraction, spm, hypotheses."""
import random

import pytest

from fairseq_kd.errors import KDInputError
from fairseq_kd.prep import clean, hyps, iwslt, sgm, textio
from fairseq_kd.prep import spm as kd_spm


# ---- line-exact I/O ----

def test_read_lines_splits_on_newline_only(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes("eins\u2028zwei\r\ndrei\x85vier\nfünf".encode("utf-8"))
    lines = textio.read_lines(f)
    assert len(lines) == 3 == textio.count_lines(f)  # the last line has no newline but counts
    assert [textio.normalize(x) for x in lines] == ["eins zwei", "drei vier", "fünf"]


def test_check_aligned_names_files_and_counts(tmp_path):
    (tmp_path / "x.de").write_text("a\nb\nc\n")
    (tmp_path / "x.en").write_text("a\nb\n")
    with pytest.raises(KDInputError) as e:
        textio.check_aligned([(tmp_path / "x.de", tmp_path / "x.en")])
    msg = str(e.value)
    assert "x.de has 3 lines" in msg and "x.en has 2" in msg


def test_bad_utf8_is_a_clear_error(tmp_path):
    f = tmp_path / "latin1.de"
    f.write_bytes("Größe\n".encode("latin-1"))
    with pytest.raises(KDInputError, match="latin1.de: not valid UTF-8"):
        textio.read_lines(f)


# ---- cleaning ----

def test_keep_pair_hand_computed():
    cfg = clean.CleanConfig(min_len=1, max_len=5, ratio=1.5)
    assert clean.keep_pair("a b", "a b c", cfg)            # 3/2 = 1.5: kept
    assert not clean.keep_pair("a b", "a b c d", cfg)      # 4/2 = 2.0 > 1.5
    assert not clean.keep_pair("", "a", cfg)               # empty side
    assert not clean.keep_pair("a b c d e f", "a b c d e f", cfg)  # 6 > max_len
    assert clean.keep_pair("a b c d e", "a b c d e", cfg)  # 5 = max_len: kept


def test_clean_never_misaligns(tmp_path):
    rng = random.Random(0)
    src, tgt = [], []
    for i in range(500):  # each side carries the pair id, so misalignment would show
        src.append(" ".join([f"s{i}"] * rng.randint(0, 9)))
        tgt.append(" ".join([f"t{i}"] * rng.randint(0, 9)))
    (tmp_path / "in.de").write_text("\n".join(src) + "\n")
    (tmp_path / "in.en").write_text("\n".join(tgt) + "\n")
    cfg = clean.CleanConfig(min_len=1, max_len=8, ratio=1.5)
    stats = clean.clean_files(tmp_path / "in.de", tmp_path / "in.en", tmp_path / "o.de", tmp_path / "o.en", cfg)
    out_s, out_t = textio.read_lines(tmp_path / "o.de"), textio.read_lines(tmp_path / "o.en")
    expected = [i for i in range(500) if clean.keep_pair(src[i], tgt[i], cfg)]
    assert 0 < len(expected) < 500 and stats["lines_out"] == len(expected) == len(out_s) == len(out_t)
    assert [int(s.split()[0][1:]) for s in out_s] == expected == [int(t.split()[0][1:]) for t in out_t]


def test_clean_no_filter_keeps_every_line(tmp_path):
    (tmp_path / "v.de").write_text("a  b\n\nc\tc c c c c\n")
    (tmp_path / "v.en").write_text("x\ny\nz\n")
    stats = clean.clean_files(tmp_path / "v.de", tmp_path / "v.en", tmp_path / "o.de", tmp_path / "o.en",
                              clean.CleanConfig(), filter_pairs=False)
    assert stats["lines_out"] == 3
    assert textio.read_lines(tmp_path / "o.de") == ["a b", "", "c c c c c c"]


# ---- WIT3 train.tags and XML ----

TRAIN_TAGS = """<url>http://www.ted.com/talks/x.html</url>
<keywords>talks, science</keywords>
<speaker>Jane Doe</speaker>
<talkid>1</talkid>
<title>Jane Doe: A talk</title>
<description>TED Talk Subtitles and Transcript: about things</description>
First sentence.
Second sentence.
"""


def test_strip_train_tags_keeps_title_and_description_text():
    out = iwslt.strip_train_tags(TRAIN_TAGS.splitlines())
    assert out == ["Jane Doe: A talk", "TED Talk Subtitles and Transcript: about things",
                   "First sentence.", "Second sentence."]


def _xml(segs, kind="srcset"):
    body = "\n".join(f'<seg id="{i}"> {s} </seg>' for i, s in segs)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<mteval>\n<{kind} setid="x" srclang="german">\n'
            f'<doc docid="1" genre="lectures">\n<url>u</url>\n<talkid>1</talkid>\n<title>T</title>\n'
            f'{body}\n</doc>\n</{kind}>\n</mteval>\n')


def test_xml_segments_unescaped_and_in_order(tmp_path):
    segs = iwslt.extract_xml_segs(_xml([(1, "Cap &amp; Trade"), (2, "a --&gt; b"), (3, "x")]))
    assert segs == [(1, "Cap & Trade"), (2, "a --> b"), (3, "x")]


def test_xml_pair_refuses_different_counts(tmp_path):
    (tmp_path / "t.de.xml").write_text(_xml([(1, "a"), (2, "b")]))
    (tmp_path / "t.en.xml").write_text(_xml([(1, "a")], "refset"))
    with pytest.raises(KDInputError, match=r"t.de.xml has 2 segments but .*t.en.xml has 1"):
        iwslt.read_xml_pair(tmp_path / "t.de.xml", tmp_path / "t.en.xml")


def test_valid_split_every_23rd():
    mask = iwslt.valid_split_mask(100)
    assert [i + 1 for i, m in enumerate(mask) if m] == [23, 46, 69, 92]


# ---- WMT SGML ----

SGM_SRC = """<srcset setid="newstest2014" srclang="any">
<doc docid="d1" genre="news" origlang="de">
<seg id="1">Erster Satz &amp; mehr.</seg>
<seg id="2">Zweiter  Satz.</seg>
</doc>
<doc docid="d2" genre="news" origlang="en">
<seg id="1">Dritter Satz.</seg>
</doc>
</srcset>
"""


def test_sgm_pairs_by_doc_and_seg(tmp_path):
    ref = SGM_SRC.replace("srcset", "refset").replace("Erster", "First").replace("Dritter", "Third")
    (tmp_path / "src.sgm").write_text(SGM_SRC)
    (tmp_path / "ref.sgm").write_text(ref)
    s, r = sgm.read_sgm_pair(tmp_path / "src.sgm", tmp_path / "ref.sgm")
    assert s == ["Erster Satz &amp; mehr.", "Zweiter Satz.", "Dritter Satz."]  # as published, like sacrebleu
    assert r[0].startswith("First") and r[2] == "Third Satz." and len(r) == 3


def test_sgm_refuses_mismatched_ids(tmp_path):
    (tmp_path / "src.sgm").write_text(SGM_SRC)
    (tmp_path / "ref.sgm").write_text(SGM_SRC.replace('docid="d2"', 'docid="d9"'))
    with pytest.raises(KDInputError, match="misaligned SGML"):
        sgm.read_sgm_pair(tmp_path / "src.sgm", tmp_path / "ref.sgm")


# ---- fairseq-generate output ----

def test_restore_order_from_shuffled_generate_output():
    lines = ["S-2\tc", "H-2\t-0.1\t\u2581c c", "D-2\t-0.1\tcc", "P-2\t-0.1 -0.2",
             "H-0\t-0.3\t\u2581a", "H-1\t-0.2\t\u2581b \u2581b", "H-1\t-0.9\tworse nbest"]
    ordered = hyps.restore_order(hyps.parse_hypotheses(lines), 3)
    assert ordered == ["\u2581a", "\u2581b \u2581b", "\u2581c c"]
    assert [hyps.remove_sentencepiece(h) for h in ordered] == ["a", "b b", "cc"]


def test_restore_order_refuses_missing_ids():
    with pytest.raises(KDInputError, match="1 are missing"):
        hyps.restore_order({0: "a", 2: "c"}, 3)


# ---- sentencepiece ----

def test_spm_joint_roundtrip(tmp_path):
    rng = random.Random(3)
    words = ["Haus", "house", "Katze", "cat", "läuft", "runs", "schnell", "fast"]
    for side in ("de", "en"):
        (tmp_path / f"train.{side}").write_text(
            "".join(" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) + "\n" for _ in range(300)))
    model = kd_spm.train_spm([tmp_path / "train.de", tmp_path / "train.en"], str(tmp_path / "m"),
                             kd_spm.SpmConfig(vocab_size=40, num_threads=1))
    sp = kd_spm.load(str(model))
    assert 20 <= sp.get_piece_size() <= 40
    text = ["Katze läuft schnell", "house  cat", ""]
    pieces = kd_spm.encode_lines(sp, text)
    assert len(pieces) == 3 and pieces[2] == "" and all("\u2581" in p for p in pieces[:2])
    assert kd_spm.decode_lines(sp, pieces) == ["Katze läuft schnell", "house cat", ""]
    assert [hyps.remove_sentencepiece(p) for p in pieces] == ["Katze läuft schnell", "house cat", ""]


# ---- downloads ----

def test_download_failure_is_clear_and_leaves_nothing(tmp_path):
    from fairseq_kd.prep import download
    out = tmp_path / "orig" / "train.de"
    with pytest.raises(KDInputError, match="could not download http://127.0.0.1:9/train.de.gz .*--data-dir"):
        download.fetch("http://127.0.0.1:9/train.de.gz", out, gunzip=True, timeout=5)
    assert not out.exists() and list((tmp_path / "orig").iterdir()) == []


def test_untar_extracts_archive(tmp_path):
    import tarfile
    from fairseq_kd.prep import download
    (tmp_path / "de-en").mkdir()
    (tmp_path / "de-en" / "train.tags.de-en.de").write_text("Hallo\n")
    with tarfile.open(tmp_path / "a.tgz", "w:gz") as tar:
        tar.add(tmp_path / "de-en", arcname="de-en")
    download.untar(tmp_path / "a.tgz", tmp_path / "out")
    assert (tmp_path / "out" / "de-en" / "train.tags.de-en.de").read_text() == "Hallo\n"


def test_binarized_size_reads_fairseq_index(tmp_path):
    from fairseq.data import data_utils, indexed_dataset
    import torch
    prefix = tmp_path / "test.de-en.de"
    builder = indexed_dataset.make_builder(f"{prefix}.bin", impl="mmap", vocab_size=100)
    for n in (3, 1, 4, 1, 5):
        builder.add_item(torch.arange(n, dtype=torch.int32))
    builder.finalize(f"{prefix}.idx")
    assert hyps.binarized_size(prefix) == 5 == len(data_utils.load_indexed_dataset(str(prefix), None))
    with pytest.raises(KDInputError, match="not found"):
        hyps.binarized_size(tmp_path / "nope")
