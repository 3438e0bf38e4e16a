"""docs/results/tools/patience_table.py: fairseq's early-stopping rule replayed on a curve."""
from tests.helpers import load_results_tool


def load():
    return load_results_tool("patience_table")


# updates: 1 2 3 4 5 6 7 8 ; a tie (30) is not an improvement for the stop rule but is kept (later wins)
CURVE = [(1, 10.0), (2, 30.0), (3, 29.0), (4, 30.0), (5, 28.0), (6, 31.0), (7, 25.0), (8, 24.0)]


def test_stop_and_kept_follow_fairseqs_rule():
    t = load()
    assert t.stop_point(CURVE, 1) == 2  # 29 < 30: one run without improvement
    assert t.stop_point(CURVE, 2) == 3  # 29, then the tie 30: two runs
    assert t.stop_point(CURVE, 3) == 4  # 29, 30 (tie), 28
    assert t.stop_point(CURVE, 4) is None  # 31 at update 6 resets; 25, 24: the curve ends first
    assert t.kept(CURVE, 3) == (4, 30.0)  # the tie at update 4 is the checkpoint fairseq keeps
    assert t.kept(CURVE, 7) == (6, 31.0)
    loss = [(1, 5.0), (2, 4.0), (3, 4.5), (4, 4.1)]
    assert t.stop_point(loss, 2, maximize=False) == 3 and t.kept(loss, 3, maximize=False) == (2, 4.0)


def test_table_from_a_curve_csv(tmp_path, capsys):
    t = load()
    path = tmp_path / "c.csv"
    path.write_text("method,seed,updates,valid_bleu,code_commit\n"
                    + "".join(f"none,1,{n},{v},abc\n" for n, v in CURVE))
    assert t.main([str(path), "--metric", "valid_bleu", "--patience", "3", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2] == "| method=none seed=1 | 8 (8) | 31.00 @6 | 3 | 5 | 30.00 @4 | 1.00 |"
    assert out[3] == "| method=none seed=1 | 8 (8) | 31.00 @6 | 4 | - (curve ends) |  |  |"


def test_log_curve_rows_from_a_train_log(tmp_path, capsys):
    from tests.test_study import TRAIN_LOG

    mod = load_results_tool("log_curve")
    log = tmp_path / "train.log"
    log.write_text(TRAIN_LOG)
    assert mod.main([str(log), "--set", "model=t"]) == 0
    assert capsys.readouterr().out == ("model,updates,valid_bleu_greedy,valid_loss\n"
                                       "t,10,1.5,5.9\nt,20,7.25,4.6\n")
    (tmp_path / "empty.log").write_text("nothing\n")
    assert mod.main([str(tmp_path / "empty.log")]) == 1
