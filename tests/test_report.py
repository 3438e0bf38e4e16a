"""fairseq-kd-report: exact mean/std over seeds, markdown table, three PNG plots."""
import json
import math

import pytest

from fairseq_kd import report as R
from fairseq_kd.errors import KDInputError
from fairseq_kd import report_plots as P
from fairseq_kd.cli import report as cli

HEADER = "method,noise,arch,decoding,lr,seed,parameters,bleu,chrf,tok_bleu,signature,train_time,updates,cell\n"
ROWS = [
    # none, noise 0: BLEU 30, 32, 34 -> mean 32, sample std 2
    "none,0,tiny,-,0.0005,1,1000,30,50,29,sig,10,100,",
    "none,0,tiny,-,0.0005,2,1000,32,52,31,sig,10,100,",
    "none,0,tiny,-,0.0005,3,1000,34,54,33,sig,10,100,",
    # word, noise 0.1: BLEU 20, 21 -> mean 20.5, std sqrt(0.5)
    "word,0.1,tiny,-,0.0005,1,1000,20,40,19,sig,10,100,",
    "word,0.1,tiny,-,0.0005,2,1000,21,41,20,sig,10,100,",
    # seq with a bigger student, one seed -> std 0
    "seq,0,big,beam,0.0005,1,5000,36.5,60,35,sig,10,100,",
]


@pytest.fixture
def results(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(HEADER + "\n".join(ROWS) + "\n")
    return path


def test_mean_std_by_hand():
    assert R.mean_std([30, 32, 34]) == (32.0, 2.0)
    m, s = R.mean_std([20, 21])
    assert m == 20.5 and s == pytest.approx(math.sqrt(0.5))
    assert R.mean_std([7.0]) == (7.0, 0.0)


def test_summary_and_table_exact(results):
    summary = R.summarize(R.load_csv(str(results)))
    assert [(s["method"], s["n"]) for s in summary] == [("none", 3), ("seq", 1), ("word", 2)]
    none, seq, word = summary
    assert (none["bleu_mean"], none["bleu_std"], none["chrf_mean"], none["chrf_std"]) == (32.0, 2.0, 52.0, 2.0)
    assert word["bleu_mean"] == 20.5 and word["bleu_std"] == pytest.approx(0.70710678)
    assert seq["bleu_std"] == 0.0 and seq["seeds"] == [1]
    table = R.markdown_table(summary)
    assert "| none | 0 | tiny | 1,000 | - | 0.0005 | beam | 3 | 32.00 ± 2.00 | 52.00 ± 2.00 | | |" in table
    assert "| word | 0.1 | tiny | 1,000 | - | 0.0005 | beam | 2 | 20.50 ± 0.71 | 40.50 ± 0.71 | n/a | |" in table
    assert "| seq | 0 | big | 5,000 | beam | 0.0005 | beam | 1 | 36.50 ± 0.00 | 60.00 ± 0.00 | n/a | |" in table


def test_series_averages_seeds_and_labels_varying_coordinates(results):
    rows = R.load_csv(str(results))
    data = P.series(rows, "noise", "bleu", P._varying(rows, ("arch", "decoding", "lr")))
    assert data["none arch=tiny decoding=-"] == [(0.0, 32.0, 2.0)]
    assert list(data) == ["none arch=tiny decoding=-", "word arch=tiny decoding=-", "seq arch=big decoding=beam"]


def test_kd_methods_against_the_baseline_with_significance(tmp_path, capsys):
    """Two seeds each; the word student's hypotheses are the references (BLEU 100), the
    baseline's lose a word on a third of the lines: Δ = 100 - mean baseline BLEU, p = 1/1001;
    seq is the baseline's own output: Δ 0, p 1 (not marked)."""
    import sacrebleu

    refs = [f"a small red dog number {i} sat on the mat" for i in range(30)]
    worse = [r if i % 3 else " ".join(r.split()[:-2]) for i, r in enumerate(refs)]
    worse2 = [r if i % 4 else " ".join(r.split()[:-1]) for i, r in enumerate(refs)]
    (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n")
    files = {"none1": worse, "none2": worse2, "word1": refs, "word2": refs, "seq1": worse, "seq2": worse2}
    for name, lines in files.items():
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
    rows = []
    for name, lines in files.items():
        method, seed = name[:-1], name[-1]
        bleu = round(sacrebleu.corpus_bleu(lines, [refs]).score, 2)
        dec = "beam" if method == "seq" else "-"
        rows.append(f"{method},0,tiny,{dec},0.001,{seed},1000,{bleu},50,0,sig,1,10,,beam5,-,{name}.txt")
    results = tmp_path / "results.csv"
    results.write_text(HEADER.strip() + ",search,teacher,hyp\n" + "\n".join(rows) + "\n")
    (tmp_path / "study.json").write_text('{"test_ref": "ref.txt"}')  # relative to the results folder
    assert cli.cli_main([str(results), "--no-plots"]) == 0
    table = capsys.readouterr().out
    base_mean = (sacrebleu.corpus_bleu(worse, [refs]).score + sacrebleu.corpus_bleu(worse2, [refs]).score) / 2
    word_line = next(line for line in table.splitlines() if line.startswith("| word "))
    # no resample of 1,000 ties or reverses it: p is below what 1,000 resamples can show, printed as <2/1000
    assert f"| {100 - base_mean:+.2f} [" in word_line and "| <0.002* |" in word_line
    seq_line = next(line for line in table.splitlines() if line.startswith("| seq "))
    assert "| +0.00 [+0.00, +0.00] | 1.000 |" in seq_line
    summary = json.loads((tmp_path / "summary.json").read_text())
    word = next(s for s in summary if s["method"] == "word")
    assert word["vs_baseline"]["seeds_base"] == 2 and word["vs_baseline"]["p_value"] == 0.0

    # any method as the baseline: seq against word is the mirror of word against CE (seq = CE's outputs)
    assert cli.cli_main([str(results), "--no-plots", "--baseline", "word", "--out-dir", str(tmp_path / "vw")]) == 0
    table = capsys.readouterr().out
    assert "Δ BLEU vs word [95% CI]" in table
    seq_line = next(line for line in table.splitlines() if line.startswith("| seq "))
    assert f"| {base_mean - 100:+.2f} [" in seq_line and "| <0.002* |" in seq_line
    assert next(line for line in table.splitlines() if line.startswith("| word ")).endswith("| | |")
    by_method = {s["method"]: s for s in json.loads((tmp_path / "vw" / "summary.json").read_text())}
    assert by_method["none"]["vs_baseline"]["delta"] == pytest.approx(-word["vs_baseline"]["delta"], abs=1e-6)
    assert cli.cli_main([str(results), "--no-plots", "--baseline", "hybrid", "--out-dir", str(tmp_path / "x")]) == 2
    assert "--baseline hybrid: no such method" in capsys.readouterr().err

    # a study kept in docs/results holds its hypotheses gzipped (export_converged.sh): the same test, the same numbers
    import gzip
    for name in files:
        hyp = tmp_path / f"{name}.txt"
        (tmp_path / f"{name}.txt.gz").write_bytes(gzip.compress(hyp.read_bytes()))
        hyp.unlink()
    assert cli.cli_main([str(results), "--no-plots", "--out-dir", str(tmp_path / "gz")]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "gz" / "summary.json").read_text()) == summary
    (tmp_path / "seq1.txt.gz").write_bytes(gzip.compress(b"x\n" * 30)[:-8])  # cut off: no gzip trailer
    assert cli.cli_main([str(results), "--no-plots", "--out-dir", str(tmp_path / "cut")]) == 2
    assert "seq1.txt.gz: not a complete gzip file" in capsys.readouterr().err


def test_an_extra_splits_results_need_its_reference_and_keep_the_main_report(tmp_path, capsys):
    """results.test1.csv (--extra-test) is scored against test1's reference, never study.json's test_ref (the
    main split's, and of the same length on Multi30k): without --test-ref it is refused; its table goes to
    report.test1/, leaving the main split's table.md as it was."""
    import sacrebleu

    main_ref = [f"a dog number {i} runs on the green grass" for i in range(30)]
    test1_ref = [f"a small cat number {i} sleeps on the red sofa" for i in range(30)]
    worse = [r if i % 3 else " ".join(r.split()[:-2]) for i, r in enumerate(test1_ref)]
    (tmp_path / "test.en").write_text("\n".join(main_ref) + "\n")
    (tmp_path / "test1.en").write_text("\n".join(test1_ref) + "\n")
    (tmp_path / "study.json").write_text('{"test_ref": "test.en"}')
    (tmp_path / "none.txt").write_text("\n".join(worse) + "\n")
    (tmp_path / "word.txt").write_text("\n".join(test1_ref) + "\n")
    (tmp_path / "table.md").write_text("the main split's table\n")
    rows = [f"{m},0,tiny,-,0.001,1,1000,{round(sacrebleu.corpus_bleu(h, [test1_ref]).score, 2)},50,0,sig,1,10,,beam5,-,"
            f"{m}.txt" for m, h in (("none", worse), ("word", test1_ref))]
    results = tmp_path / "results.test1.csv"
    results.write_text(HEADER.strip() + ",search,teacher,hyp\n" + "\n".join(rows) + "\n")
    assert cli.cli_main([str(results), "--no-plots"]) == 2
    assert "extra test split 'test1'" in capsys.readouterr().err and not (tmp_path / "report.test1").exists()
    # the main split's reference given by hand: same length, but the rows' BLEU says it is not theirs
    assert cli.cli_main([str(results), "--no-plots", "--test-ref", str(tmp_path / "test.en")]) == 2
    assert "is not the one they were scored with" in capsys.readouterr().err
    assert cli.cli_main([str(results), "--no-plots", "--test-ref", str(tmp_path / "test1.en")]) == 0
    capsys.readouterr()
    word = next(s for s in json.loads((tmp_path / "report.test1" / "summary.json").read_text()) if s["method"] == "word")
    assert word["vs_baseline"]["delta"] == pytest.approx(100 - sacrebleu.corpus_bleu(worse, [test1_ref]).score, abs=1e-6)
    assert (tmp_path / "table.md").read_text() == "the main split's table\n"
    assert R.extra_split("x/results.csv") is None and R.extra_split("results.test_2017.csv") == "test_2017"


def test_a_method_with_fewer_seeds_is_compared_on_the_seeds_both_have(tmp_path, capsys):
    """Word-KD at seeds 1, 2 against CE at 1, 2, 3: the Δ and its bootstrap are word's 1, 2 against CE's 1, 2
    (a seed is the same initial weights for every method), and the table names the seeds; CE's third seed,
    far below the others here, does not enter the difference."""
    import sacrebleu

    from fairseq_kd.significance import paired_bootstrap

    refs = [f"a small red dog number {i} sat on the mat" for i in range(30)]
    cut = lambda k: [r if i % k else " ".join(r.split()[:-2]) for i, r in enumerate(refs)]  # noqa: E731
    files = {"none1": cut(3), "none2": cut(4), "none3": ["x"] * 30, "word1": cut(5), "word2": refs}
    rows = []
    for name, lines in files.items():
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
        rows.append(f"{name[:-1]},0,tiny,-,0.001,{name[-1]},1000,{round(sacrebleu.corpus_bleu(lines, [refs]).score, 2)},"
                    f"50,0,sig,1,10,,beam5,-,{name}.txt")
    (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n")
    (tmp_path / "study.json").write_text('{"test_ref": "ref.txt"}')
    results = tmp_path / "results.csv"
    results.write_text(HEADER.strip() + ",search,teacher,hyp\n" + "\n".join(rows) + "\n")
    assert cli.cli_main([str(results), "--no-plots", "--bootstrap-samples", "200"]) == 0
    table = capsys.readouterr().out
    word = next(s for s in json.loads((tmp_path / "summary.json").read_text()) if s["method"] == "word")
    expected = paired_bootstrap([files["none1"], files["none2"]], [files["word1"], files["word2"]], refs, n_samples=200)
    assert word["vs_baseline"]["delta"] == pytest.approx(expected["delta"], abs=1e-9)
    assert (word["vs_baseline"]["ci_low"], word["vs_baseline"]["seeds"]) == (expected["ci_low"], [1, 2])
    assert word["vs_baseline_note"] == "on the seeds both have (1, 2): word has 2, none 3"
    assert f"| {expected['delta']:+.2f} [{expected['ci_low']:+.2f}, {expected['ci_high']:+.2f}] (seeds 1, 2) |" in table


def test_cli_writes_table_summary_and_three_pngs(results, tmp_path, capsys):
    curves = tmp_path / "curves.csv"
    curves.write_text("method,noise,arch,decoding,lr,seed,updates,valid_bleu\n"
                      "none,0,tiny,-,0.0005,1,50,10\nnone,0,tiny,-,0.0005,2,50,12\n"
                      "none,0,tiny,-,0.0005,1,100,20\nnone,0,tiny,-,0.0005,2,100,22\n")
    out = tmp_path / "figs"
    assert cli.cli_main([str(results), "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == (out / "table.md").read_text() and "32.00 ± 2.00" in printed
    assert json.loads((out / "summary.json").read_text())[0]["bleu_mean"] == 32.0
    for name in ("bleu_vs_noise.png", "bleu_vs_params.png", "bleu_vs_updates.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert not list(out.glob("*.tmp*"))


def test_updates_plot_falls_back_to_final_points_without_curves(results, tmp_path):
    rows = R.load_csv(str(results))
    paths = P.make_plots(rows, None, str(tmp_path / "p"))
    assert len(paths) == 3 and all(p.endswith(".png") for p in paths)


def test_bad_results_file_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("method,noise\nnone,0\n")
    assert cli.cli_main([str(bad)]) == 2
    assert "missing column(s) arch" in capsys.readouterr().err
    assert cli.cli_main([str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err


def test_gap_closed_by_hand(results, tmp_path, capsys):
    """(student - CE) / (teacher - CE) with the teacher's BLEU of the group's own test search."""
    assert R.gap_closed(34.0, 32.0, 36.0) == 0.5
    assert R.gap_closed(31.0, 32.0, 36.0) == -0.25
    assert R.gap_closed(40.0, 32.0, 32.0) is None and R.gap_closed(40.0, 32.0, 30.0) is None
    path = tmp_path / "r.csv"
    path.write_text(HEADER + "\n".join(ROWS[:3] + ["word,0,tiny,-,0.0005,1,1000,33,50,29,sig,10,100,",
                                                   "word,0,tiny,-,0.0005,2,1000,35,50,29,sig,10,100,"]) + "\n")
    summary = R.add_gap_closed(R.summarize(R.load_csv(str(path))), {"beam": 36.0})
    word = next(s for s in summary if s["method"] == "word")
    # on the seeds both have: word's 1, 2 (34) against CE's 1, 2 (31), not CE's three (32): (34 - 31) / (36 - 31)
    assert word["gap_closed"] == 0.6
    table = R.markdown_table(summary)
    assert table.splitlines()[0].endswith("| p | gap closed |")
    assert "| 34.00 ± 1.41 | 50.00 ± 0.00 | n/a | | +60% (seeds 1, 2) |" in table
    assert "teacher's test BLEU 36.00 (beam)" in table
    # a teacher below CE, or none for the group's search: no share, and the table says why
    low = R.markdown_table(R.add_gap_closed(R.summarize(R.load_csv(str(path))), {"beam": 31.0}))
    assert "| n/a |\n" in low and "teacher 31.00 is not above CE 31.00 (beam)" in low
    other = R.markdown_table(R.add_gap_closed(R.summarize(R.load_csv(str(path))), {"greedy": 36.0}))
    assert "no teacher BLEU for search beam" in other
    two = [{**s, "teacher": t} for s, t in zip(R.summarize(R.load_csv(str(path))), ["big", "small"])]
    with pytest.raises(KDInputError, match=r"several teachers \(big, small\)"):  # one teacher BLEU cannot serve both
        R.add_gap_closed(two, {"beam": 36.0})
    # through the CLI: a bare number for a one-search file, SEARCH=BLEU always; without the flag no column
    for flag in ("36", "beam=36"):
        assert cli.cli_main([str(path), "--no-plots", "--no-significance", "--teacher-bleu", flag,
                             "--out-dir", str(tmp_path / "o")]) == 0
        assert "+60% (seeds 1, 2)" in capsys.readouterr().out
    assert cli.cli_main([str(path), "--no-plots", "--no-significance", "--out-dir", str(tmp_path / "o")]) == 0
    assert "gap closed" not in capsys.readouterr().out
    assert cli.cli_main([str(path), "--no-plots", "--teacher-bleu", "136", "--out-dir", str(tmp_path / "o")]) == 2
    assert "--teacher-bleu 136: pass the teacher's corpus BLEU" in capsys.readouterr().err


def test_teacher_bleu_per_search():
    assert R.parse_teacher_bleu(["beam5=39.4", "greedy=38.9"], ["beam5", "greedy"]) == {"beam5": 39.4, "greedy": 38.9}
    assert R.parse_teacher_bleu(["39.4"], ["beam5", "beam5"]) == {"beam5": 39.4}
    with pytest.raises(R.KDInputError, match="holds searches beam5, greedy|hold searches beam5, greedy"):
        R.parse_teacher_bleu(["39.4"], ["beam5", "greedy"])
    with pytest.raises(R.KDInputError, match="given twice"):
        R.parse_teacher_bleu(["beam5=1", "beam5=2"], ["beam5"])
    with pytest.raises(R.KDInputError, match="beam5=x: pass the teacher's corpus BLEU"):
        R.parse_teacher_bleu(["beam5=x"], ["beam5"])
