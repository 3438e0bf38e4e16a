"""fairseq_kd.integrity: every class of bad row or record is refused with one line naming the file, the
line and the fix; exact copies are counted once (a copy never becomes a seed), in every reader."""
import json
import logging
import os

import pytest

from fairseq_kd import integrity
from fairseq_kd.errors import KDInputError
from fairseq_kd.study.config import Cell

HEADER = ("method,noise,arch,decoding,lr,seed,teacher,search,parameters,bleu,chrf,tok_bleu,signature,train_time,"
          "updates,best_update,stop,cell,hyp")
SIG = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"


def row(method="none", seed=1, bleu="30", search="beam5", noise="0", **over):
    cell = Cell(method, float(noise), "tiny", "-", 0.001, seed).slug()
    values = {"method": method, "noise": noise, "arch": "tiny", "decoding": "-", "lr": "0.001", "seed": str(seed),
              "teacher": "-", "search": search, "parameters": "1000", "bleu": bleu, "chrf": "50", "tok_bleu": "29",
              "signature": SIG, "train_time": "10", "updates": "100", "best_update": "100", "stop": "budget",
              "cell": cell, "hyp": f"cells/{cell}/hyp.{search}.txt"}
    values.update(over)
    return ",".join(values[c] for c in HEADER.split(","))


def write(tmp_path, *rows, header=HEADER, name="results.csv"):
    path = tmp_path / name
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return str(path)


def refused(path, *needles):
    with pytest.raises(KDInputError) as err:
        integrity.read_table(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(path)
    for n in needles:
        assert n in msg, msg
    return msg


def test_two_seeds_and_searches_pass(tmp_path):
    path = write(tmp_path, row(seed=1), row(seed=2), row(seed=1, search="greedy"), row("word", 1, "31"))
    assert len(integrity.read_table(path)[1]) == 4


def test_exact_copy_is_collapsed_and_said(tmp_path, caplog):
    path = write(tmp_path, row(seed=1), row(seed=2), row(seed=1))
    with caplog.at_level(logging.WARNING):
        rows = integrity.read_table(path)[1]
    assert [r["seed"] for r in rows] == ["1", "2"]
    assert f"{path}:4" in caplog.text and "counted once" in caplog.text


def test_conflicting_duplicate_is_refused(tmp_path):
    path = write(tmp_path, row(seed=1, bleu="30"), row(seed=2), row(seed=1, bleu="31"))
    refused(path, ":4:", "results.csv:2", "bleu", "delete the wrong line")


def test_same_cell_spelled_differently_is_one_cell(tmp_path):
    """noise 0.10 vs 0.1 and seed 1.0 vs 1 name one cell: canonical keys, not text."""
    path = write(tmp_path, row(noise="0.1", bleu="30"), row(noise="0.10", bleu="31", seed="1"))
    refused(path, ":3:", "other values")


def test_cell_column_must_be_the_rows_own_cell(tmp_path):
    copied = row(seed=1).replace(",1,-,beam5,", ",2,-,beam5,", 1).replace("hyp.beam5", "hyp2.beam5")
    path = write(tmp_path, row(seed=1), copied)
    refused(path, ":3:", "is not the cell of the row's own columns")


def test_one_hypothesis_file_for_two_seeds_is_refused(tmp_path):
    """A copied row with an edited seed (no cell column to betray it) shares the hypothesis file."""
    a = row(seed=1, cell="")
    b = row(seed=2, cell="", hyp=a.split(",")[-1])
    path = write(tmp_path, a, b)
    refused(path, ":3:", "hypothesis file", "never counts as a seed")


@pytest.mark.parametrize("col,value,needle", [
    ("bleu", "100.5", "outside [0, 100]"), ("bleu", "-1", "outside [0, 100]"), ("chrf", "nan", "finite"),
    ("bleu", "inf", "finite"), ("tok_bleu", "101", "outside"), ("parameters", "-5", "not a count"),
    ("updates", "2.5", "not a count"), ("seed", "1.5", "not a count"), ("train_time", "-1", "negative"),
    ("noise", "1.5", "outside [0, 1]"), ("lr", "0", "not > 0"), ("stop", "bored", "not one of"),
    ("bleu", "thirty", "not a number"), ("bleu", "", "is empty"), ("parameters", "", "is empty"),
])
def test_values_outside_their_domain_are_refused(tmp_path, col, value, needle):
    path = write(tmp_path, row(seed=2), row(**{col: value}))
    refused(path, ":3:", needle, col)


def test_mixed_sacrebleu_signatures_are_refused(tmp_path):
    path = write(tmp_path, row(seed=1), row(seed=2, signature=SIG.replace("13a", "intl")))
    refused(path, ":3:", "signature", "tok:intl")


def test_optional_columns_may_be_empty_and_unknown_columns_are_kept(tmp_path):
    header = HEADER + ",lane"
    path = write(tmp_path, row(best_update="", stop="", signature="", tok_bleu="", cell="", hyp="") + ",a",
                 header=header)
    fields, rows = integrity.read_table(path)
    assert fields[-1] == "lane" and rows[0]["lane"] == "a" and rows[0]["stop"] == ""


def test_older_files_without_teacher_and_search(tmp_path):
    header = "method,noise,arch,decoding,lr,seed,parameters,bleu,chrf"
    path = write(tmp_path, "none,0,a,-,0.001,1,10,30,50", "none,0,a,-,0.001,1,10,31,50", header=header)
    refused(path, ":3:", "other values")


def test_bom_and_crlf_are_read(tmp_path):
    path = tmp_path / "results.csv"
    path.write_bytes(("\ufeff" + HEADER + "\r\n" + row() + "\r\n").encode())
    rows = integrity.read_table(str(path))[1]
    assert rows[0]["method"] == "none" and rows[0]["hyp"].endswith(".txt")


@pytest.mark.parametrize("text,needle", [
    (HEADER + "\n" + row() + "\n" + row(seed=2).replace("tiny", "ti\0ny", 1) + "\n", ":3: a NUL byte"),
    (HEADER + "\n" + row(method="x" * 200_000) + "\n", "not a readable CSV row"),
    (HEADER + ",bleu\n" + row() + ",1\n", "appear twice in the header"),
    (HEADER + "\n" + row() + ",extra\n", "different number of fields than the header"),
    ("method,noise\nnone,0\n", "missing column"),
])
def test_csv_syntax_is_refused_with_the_line(tmp_path, text, needle):
    path = tmp_path / "results.csv"
    path.write_text(text)
    refused(str(path), needle)


def test_curves_points(tmp_path):
    header = "method,noise,arch,decoding,lr,seed,teacher,updates,valid_bleu,valid_loss"
    ok = write(tmp_path, "none,0,a,-,0.001,1,-,10,,5.1", "none,0,a,-,0.001,1,-,20,3.5,nan",
               "none,0,a,-,0.001,1,-,20,3.5,nan", header=header, name="curves.csv")
    assert len(integrity.read_table(ok)[1]) == 2  # a diverged loss is a record; the copy is collapsed
    bad = write(tmp_path, "none,0,a,-,0.001,1,-,10,,5.1", "none,0,a,-,0.001,1,-,10,2,5.1", header=header,
                name="c2.csv")
    refused(bad, ":3:", "same curves row")
    refused(write(tmp_path, "none,0,a,-,0.001,1,-,10,120,5", header=header, name="c3.csv"), "valid_bleu")


def test_merge_rows_across_files(tmp_path):
    a = dict(zip(HEADER.split(","), row(seed=1).split(",")))
    b = dict(a, bleu="31")
    assert len(integrity.merge_rows([("A/results.csv", [a]), ("B/results.csv", [dict(a)])])) == 1
    with pytest.raises(KDInputError, match=r"B/results.csv \(row 1\).*A/results.csv \(row 1\)"):
        integrity.merge_rows([("A/results.csv", [a]), ("B/results.csv", [b])])


# ---------------------------------------------------------------- JSON records


@pytest.mark.parametrize("text,needle", [
    ('{"a": NaN}', "NaN is not a JSON number"), ('{"a": -Infinity}', "Infinity"),
    ('{"k": 1, "k": 2}', "appear twice"), ('[1, 2]', "not an object"), ('{"a": ', "not valid JSON"),
    ('{"n_tokens": -1}', "not a count"), ('{"x": {"n_tokens": 1.5}}', "x.n_tokens"),
    ('{"n_tokens": true}', "not a count"), ('{"a": 1} x', "not valid JSON"),
])
def test_json_records(tmp_path, text, needle):
    path = tmp_path / "meta.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(KDInputError) as err:
        integrity.load_json(str(path), "re-run the tool", counts=("n_tokens",))
    assert needle in str(err.value) and str(err.value).startswith(str(path)) and "re-run the tool" in str(err.value)


def test_json_written_is_valid():
    with pytest.raises(ValueError):
        integrity.dumps_json({"bleu": float("nan")})
    assert json.loads(integrity.dumps_json({"bleu": 1.5})) == {"bleu": 1.5}


def test_readers_of_other_tools_use_the_checks(tmp_path):
    """cache meta, distill shard meta.json, export metadata: one line, no traceback."""
    from fairseq_kd.cache import TeacherCache
    from fairseq_kd.distill.shards import ShardStore
    from fairseq_kd.export import convert

    (tmp_path / "train.meta.json").write_text('{"format": 1, "k": -3}')
    with pytest.raises(KDInputError, match="k=-3 is not a count"):
        TeacherCache.open(str(tmp_path), "train", None, None)
    (tmp_path / "meta.json").write_text('{"a": NaN}')
    with pytest.raises(KDInputError, match="meta.json: NaN"):
        ShardStore(str(tmp_path), {"a": 1})
    (tmp_path / convert.META_FILE).write_text('{"params": 1, "params": 2}')
    with pytest.raises(KDInputError, match="appear twice"):
        convert.read_meta(str(tmp_path))


# ---------------------------------------------------------------- every reader


def test_report_never_counts_a_copy_as_a_seed(tmp_path, capsys):
    from fairseq_kd.cli import report as cli

    path = write(tmp_path, row(seed=1, bleu="30"), row(seed=1, bleu="30"), row("word", 1, "32"))
    assert cli.cli_main([path, "--no-plots", "--no-significance", "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert [(s["method"], s["n"], s["bleu_std"]) for s in summary] == [("none", 1, 0.0), ("word", 1, 0.0)]


@pytest.mark.parametrize("bad", [row(seed=2, bleu="nan"), row(seed=2, bleu="-3"), row(seed=2, bleu="130"),
                                 row(seed=2, signature="other"), row(seed=1, bleu="31")])
def test_report_refuses_with_one_line_and_writes_nothing(tmp_path, capsys, bad):
    from fairseq_kd.cli import report as cli

    path = write(tmp_path, row(seed=1), bad)
    before = open(path, "rb").read()
    assert cli.cli_main([path, "--no-plots", "--no-significance"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fairseq-kd-report: error: {path}:3:") and "\n" not in err
    assert sorted(os.listdir(tmp_path)) == ["results.csv"] and open(path, "rb").read() == before


def test_study_resume_reads_through_the_checks(tmp_path):
    from fairseq_kd.study.records import read_csv, replace_rows_atomic
    from fairseq_kd.study.config import RESULT_FIELDS

    path = write(tmp_path, row(seed=1), row(seed=2), row(seed=1))
    assert [r["seed"] for r in read_csv(path)] == ["1", "2"]
    replace_rows_atomic(path, lambda r: r["seed"] == "2", [], RESULT_FIELDS)  # the copy is not written back
    assert [r["seed"] for r in read_csv(path)] == ["1"]
    write(tmp_path, row(seed=1), row(seed=1, bleu="99"))
    with pytest.raises(KDInputError, match=r"results.csv:3: the same results row as .*results.csv:2"):
        read_csv(path)


def test_report_refuses_a_bootstrap_without_resamples(tmp_path, capsys):
    from fairseq_kd.cli import report as cli

    path = write(tmp_path, row(seed=1))
    assert cli.cli_main([path, "--no-plots", "--bootstrap-samples", "0"]) == 2
    assert "--bootstrap-samples 0" in capsys.readouterr().err and sorted(os.listdir(tmp_path)) == ["results.csv"]
