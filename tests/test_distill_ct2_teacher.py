"""fairseq-kd-distill --teacher-ct2: a CTranslate2 teacher with its own tokenizer and vocabulary.

Truths: the teacher's own translation of each sentence alone through CTranslate2's Python API
(``ctranslate2.Translator.translate_batch``), detokenized by its sentencepiece model and
re-encoded by the student's; the student's dictionary files (byte equality); byte equality of
split-and-merged and interrupted-and-resumed runs with a single uninterrupted run.
"""
import json
from pathlib import Path

import pytest

from tests import tiny_marian

A, B, BEAM = 1.0, 2, 2  # --max-len-a, --max-len-b, --beam


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    return tiny_marian.world(tmp_path_factory)


def distil(w, out: Path, teacher: str = "other", *extra, split: str = "train") -> dict:
    from fairseq_kd.cli import distill

    argv = ["--data", str(w["bin"]), "--split", split, "--teacher-ct2", str(w[teacher]), "-o", str(out),
            "--spm-model", str(w["spm"]), "--ct2-compute-type", "float32", "--cpu", "--no-progress",
            "--beam", str(BEAM), "--max-len-a", str(A), "--max-len-b", str(B), "--shard-size", "16",
            "--max-tokens", "40", *extra]
    return distill.main(argv)


def expected_lines(w, teacher: str, split: str, target_prefix=None):
    """Line i: the teacher's translation of source i alone, in the student's pieces (``<unk>`` where
    the student's dictionary lacks a piece), and the teacher's score."""
    import ctranslate2
    import sentencepiece as spm
    from fairseq.data import Dictionary

    translator = ctranslate2.Translator(str(w[teacher]), device="cpu", compute_type="float32")
    t_sp = spm.SentencePieceProcessor(model_file=str(w[teacher] / "source.spm"))
    s_sp = spm.SentencePieceProcessor(model_file=str(w["spm"]))
    d = Dictionary.load(str(w["bin"] / "dict.tgt.txt"))
    lines, scores = [], []
    for text in (w["text"] / f"{split}.src").read_text(encoding="utf-8").splitlines():
        hyp, score = tiny_marian.reference_translation(translator, t_sp, t_sp, text, BEAM, A, B, target_prefix)
        pieces = s_sp.encode(hyp, out_type=str)
        lines.append(" ".join(p if d.index(p) != d.unk() else "<unk>" for p in pieces))
        scores.append(score)
    return lines, scores


def shard_records(out: Path):
    return [json.loads(line) for f in sorted((out / "shards").glob("shard-*.jsonl")) for line in f.read_text().splitlines()]


def published(out: Path):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
            and p.name != "summary.json" and not {"shards", "parts"} & set(p.relative_to(out).parts)}


@pytest.mark.integration
@pytest.mark.parametrize("teacher", ["same", "other"])
def test_distilled_corpus_is_the_teachers_own_translation_reencoded(w, tmp_path, teacher):
    from fairseq.data import Dictionary, data_utils

    out = tmp_path / teacher
    summary = distil(w, out, teacher)
    want, scores = expected_lines(w, teacher, "train")
    assert (out / "train.tgt").read_text(encoding="utf-8").splitlines() == want
    assert (out / "train.src").read_bytes() == (w["root"] / "student_raw" / "train.src").read_bytes()
    assert [r["score"] for r in shard_records(out)] == pytest.approx(scores, abs=1e-5)
    # the student's dictionaries, never the teacher's; the binarized target is those lines
    for lang in ("src", "tgt"):
        assert (out / "bin" / f"dict.{lang}.txt").read_bytes() == (w["bin"] / f"dict.{lang}.txt").read_bytes()
    d = Dictionary.load(str(w["bin"] / "dict.tgt.txt"))
    ds = data_utils.load_indexed_dataset(str(out / "bin" / "train.src-tgt.tgt"), d, "mmap")
    assert [d.string(ds[i]) for i in range(len(ds))] == want
    assert summary["backend"] == "ct2-teacher" and summary["sentences"] == len(want) == 48
    assert summary["failed_hypotheses"] == 0 and summary["unk_tokens"] == sum(x.split().count("<unk>") for x in want)
    if teacher == "other":  # the case this is about: the teacher's vocabulary is not the student's
        vocab = set(json.loads((w["other"] / "shared_vocabulary.json").read_text()))
        assert vocab != set(d.symbols) and len(vocab - set(d.symbols)) > 5
        assert len(set(want)) > 10  # the teacher's outputs depend on the input


@pytest.mark.integration
def test_target_prefix_is_forced_and_dropped(w, tmp_path):
    prefix = json.loads((w["same"] / "shared_vocabulary.json").read_text())[4]  # a language token's role: forced
    assert prefix.startswith("▁")  # first target token, not part of the output
    distil(w, tmp_path / "p", "same", "--teacher-target-prefix", prefix, split="valid")
    want, _ = expected_lines(w, "same", "valid", target_prefix=prefix)
    assert (tmp_path / "p" / "valid.tgt").read_text(encoding="utf-8").splitlines() == want


@pytest.mark.integration
def test_parts_merge_and_resume_equal_one_run(w, tmp_path, monkeypatch):
    from fairseq_kd.distill import run as run_mod

    one = tmp_path / "one"
    distil(w, one)
    split = tmp_path / "split"
    for i in range(2):
        distil(w, split, "other", "--part", f"{i}/2")
    merged = distil(w, split, "other", "--merge")
    assert merged["merged_parts"] == 2 and published(split) == published(one)

    resumed, real, calls = tmp_path / "resumed", run_mod.decode_shard, {"n": 0}

    def killed_on_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        return real(*a, **k)

    monkeypatch.setattr(run_mod, "decode_shard", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        distil(w, resumed)
    assert not (resumed / "train.tgt").exists() and len(list((resumed / "shards").glob("shard-*.jsonl"))) == 1
    monkeypatch.setattr(run_mod, "decode_shard", real)
    distil(w, resumed)
    assert published(resumed) == published(one)


@pytest.mark.integration
def test_settings_fingerprint_is_the_model_directory_content(w, tmp_path):
    import shutil

    from fairseq_kd.errors import KDInputError

    out = tmp_path / "o"
    distil(w, out)
    first = published(out)
    copy = tmp_path / "teacher_copy"
    shutil.copytree(w["other"], copy)
    w2 = dict(w, other=copy)
    distil(w2, out)  # the same content elsewhere: the same teacher, shards reused
    assert published(out) == first
    with open(copy / "config.json", "a") as f:
        f.write("\n")  # any byte of the directory
    with pytest.raises(KDInputError, match=r"\(teacher differ"):
        distil(w2, out)
    token = json.loads((w["other"] / "shared_vocabulary.json").read_text())[5]
    with pytest.raises(KDInputError, match=r"\(teacher differ"):
        distil(w, out, "other", "--teacher-target-prefix", token)  # its tokenization is part of the teacher


@pytest.mark.integration
def test_failed_sentence_falls_back_to_gold_counted(w, tmp_path, monkeypatch):
    from fairseq_kd.distill import ct2_teacher

    real, bad = ct2_teacher.CT2TeacherBackend.decode, 5

    def decode(self, ids):
        if bad in ids:
            raise RuntimeError("simulated decoder error")
        return real(self, ids)

    monkeypatch.setattr(ct2_teacher.CT2TeacherBackend, "decode", decode)
    out = tmp_path / "f"
    summary = distil(w, out, "other", "--max-failed-fraction", "0.05")
    assert summary["failed_by_cause"] == {"RuntimeError": 1} and summary["failed_hypotheses"] == 1
    want, _ = expected_lines(w, "other", "train")
    got = (out / "train.tgt").read_text(encoding="utf-8").splitlines()
    gold = (w["root"] / "student_raw" / "train.tgt").read_text(encoding="utf-8").splitlines()
    assert got[bad] == gold[bad] and got[:bad] + got[bad + 1:] == want[:bad] + want[bad + 1:]


@pytest.mark.integration
def test_lenpen_zero_keeps_fairseqs_stopping_rule(w, tmp_path, monkeypatch):
    """--lenpen 0 (fairseq: unnormalized scores, the beam runs until ``beam`` hypotheses end) reaches
    CTranslate2 as NO_LENGTH_PENALTY, as in the CTranslate2 backend and the export: at exactly 0 CTranslate2
    stops a sentence's search when its best hypothesis ends (tests/test_export_gen_args.py)."""
    from fairseq_kd.distill import ct2_teacher
    from fairseq_kd.export.decode import NO_LENGTH_PENALTY

    sent, real = [], ct2_teacher.CT2TeacherBackend.options
    monkeypatch.setattr(ct2_teacher.CT2TeacherBackend, "options",
                        lambda self, n: sent.append(real(self, n)["length_penalty"]) or real(self, n))
    distil(w, tmp_path / "z", "other", "--lenpen", "0", split="valid")
    distil(w, tmp_path / "two", "other", "--lenpen", "2", split="valid")
    assert sent and set(sent) == {NO_LENGTH_PENALTY, 2.0}


def one_line_error(w, tmp_path, capsys, *argv) -> str:
    from fairseq_kd.cli import distill

    with pytest.raises(SystemExit) as exc:
        distill.cli_main(["--data", str(w["bin"]), "--split", "valid", "--spm-model", str(w["spm"]), "--cpu",
                          "--no-progress", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("fairseq-kd-distill: error:")
    return err[-1]


@pytest.mark.integration
def test_unusable_teachers_are_refused_in_one_line(w, tmp_path, capsys):
    import shutil

    out = str(tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no model.bin" in one_line_error(w, tmp_path, capsys, "--teacher-ct2", str(empty), "-o", out)
    broken = tmp_path / "broken"
    shutil.copytree(w["other"], broken)
    (broken / "model.bin").write_bytes(b"not a model")
    assert "cannot load" in one_line_error(w, tmp_path, capsys, "--teacher-ct2", str(broken), "-o", out)
    digits = tiny_marian.train_spm([" ".join(str(i * j) for j in range(9)) for i in range(40)],
                                   tmp_path / "digits" / "spm", vocab_size=30)
    msg = one_line_error(w, tmp_path, capsys, "--teacher-ct2", str(w["other"]), "--teacher-spm", str(digits), "-o", out)
    assert "does not match" in msg and str(digits) in msg
    msg = one_line_error(w, tmp_path, capsys, "--teacher-ct2", str(w["other"]), "--teacher-target-prefix", "deu_Latn",
                         "-o", out)
    assert "deu_Latn" in msg
    msg = one_line_error(w, tmp_path, capsys, "--teacher-ct2", str(w["other"]), "-o", str(w["other"] / "out"))
    assert "inside the input --teacher-ct2" in msg
    assert "pass one teacher" in one_line_error(w, tmp_path, capsys, "-o", out)
    assert not (tmp_path / "out" / "shards").exists()  # nothing written by a refused run


@pytest.mark.integration
def test_sampling_best_of_n_and_temperature_outside_sampling_are_refused_in_one_line(w, tmp_path, capsys):
    """fairseq's sampling keeps the best of --beam N samples and its beam/greedy search divide the logits by
    --temperature; a CTranslate2 teacher does neither: refused, nothing written."""
    out = tmp_path / "out"
    base = ["--teacher-ct2", str(w["other"]), "-o", str(out)]
    msg = one_line_error(w, tmp_path, capsys, *base, "--decoding", "sampling", "--beam", "3")
    assert "--beam 3" in msg and "pass --beam 1" in msg
    for flags in (["--decoding", "beam", "--beam", "2"], ["--decoding", "greedy"]):
        msg = one_line_error(w, tmp_path, capsys, *base, *flags, "--temperature", "0.5")
        assert "--temperature 0.5" in msg and "--temperature 1" in msg
    assert not out.exists()


@pytest.mark.integration
def test_seq_inter_chrf_picks_among_the_teachers_nbest(w, tmp_path):
    import ctranslate2
    import sacrebleu
    import sentencepiece as spm
    from fairseq.data import Dictionary

    out = tmp_path / "nbest"
    summary = distil(w, out, "other", "--nbest", "2", "--select", "chrf")
    translator = ctranslate2.Translator(str(w["other"]), device="cpu", compute_type="float32")
    t_sp = spm.SentencePieceProcessor(model_file=str(w["other"] / "source.spm"))
    s_sp = spm.SentencePieceProcessor(model_file=str(w["spm"]))
    src = (w["text"] / "train.src").read_text(encoding="utf-8").splitlines()
    gold = [s_sp.decode(line.split()) for line in (w["root"] / "student_raw" / "train.tgt").read_text().splitlines()]
    d = Dictionary.load(str(w["bin"] / "dict.tgt.txt"))
    want, ranks = [], []
    for text, ref in zip(src, gold):
        tokens = t_sp.encode(text, out_type=str) + ["</s>"]
        res = translator.translate_batch([tokens], beam_size=BEAM, num_hypotheses=2, max_decoding_length=int(A * len(tokens) + B),
                                         min_decoding_length=1, return_scores=True, max_input_length=0)[0]
        pieces = [[p if d.index(p) != d.unk() else "<unk>" for p in s_sp.encode(t_sp.decode_pieces(list(h)), out_type=str)]
                  for h in res.hypotheses]  # the student's pieces, as its dictionary holds them
        chrf = [sacrebleu.sentence_chrf(s_sp.decode(p), [ref]).score for p in pieces]
        k = max(range(len(pieces)), key=lambda j: (chrf[j], -j))
        want.append(" ".join(pieces[k]))
        ranks.append(k)
    assert (out / "train.tgt").read_text(encoding="utf-8").splitlines() == want
    assert summary["nbest_rank_histogram"] == {str(r): ranks.count(r) for r in sorted(set(ranks))}
    assert 0 < ranks.count(1) < len(ranks)  # both ranks chosen: the selection is exercised
