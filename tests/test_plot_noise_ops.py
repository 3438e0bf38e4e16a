"""docs/results/tools/plot_noise_ops.py: one point per method and noise rate, or a refusal when a results CSV
holds several groups there (another decoding, arch, lr or teacher); a point over fewer seeds than the others is
marked with its count, and a method missing the top rate gets no drop.

Truths: hand-written results rows whose seed means are computed by hand."""
import pytest

from fairseq_kd.study.config import RESULT_FIELDS, Cell
from fairseq_kd.study.records import write_csv_atomic
from tests.helpers import load_results_tool

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tool():
    return load_results_tool("plot_noise_ops")


def results(path, cells):
    """A results.csv of (method, noise, decoding, lr, seed, bleu) rows at search beam5."""
    rows = []
    for method, noise, decoding, lr, seed, bleu in cells:
        c = Cell(method, noise, "t", decoding, lr, seed, "-")
        rows.append(dict(method=method, noise=noise, arch="t", decoding=decoding, lr=lr, seed=seed, teacher="-",
                         search="beam5", parameters=1, bleu=bleu, chrf=40, cell=c.slug(), hyp=f"cells/{c.slug()}/h"))
    write_csv_atomic(str(path), rows, list(RESULT_FIELDS))
    return str(path)


GRID = [(m, z, "beam" if m == "seq" else "-", 0.003, s, b + s - 1.5 - 10 * z)
        for m, b in (("none", 20.0), ("word", 21.0), ("seq", 25.0)) for z in (0.0, 0.1) for s in (1, 2)]


def test_seed_means_per_method_and_rate(tool, tmp_path):
    st = tool.seed_stats(results(tmp_path / "r.csv", GRID), "beam5")
    assert {m: {z: (round(v[0], 6), v[2]) for z, v in st[m].items()} for m in st} == {
        "none": {0.0: (20.0, 2), 0.1: (19.0, 2)}, "word": {0.0: (21.0, 2), 0.1: (20.0, 2)},
        "seq": {0.0: (25.0, 2), 0.1: (24.0, 2)}}


def test_table_and_figure(tool, tmp_path, capsys):
    png = tmp_path / "ops.png"
    tool.main([str(png), f"deletion={results(tmp_path / 'r.csv', GRID)}"])
    out = capsys.readouterr().out.splitlines()
    assert out[2:] == ["| deletion | CE | 20.00 / 19.00 |  | -1.00 |",
                        "| deletion | word-KD | 21.00 / 20.00 | +1.00 / +1.00 | -1.00 |",
                        "| deletion | seq-KD | 25.00 / 24.00 | +5.00 / +5.00 | -1.00 |", "",
                        "(2 seeds per point)", f"wrote {png}"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_decodings_of_one_method_and_rate_are_refused(tool, tmp_path):
    path = results(tmp_path / "r.csv", [("none", 0.1, "-", 0.003, 1, 20.0), ("seq", 0.1, "beam", 0.003, 1, 25.0),
                                         ("seq", 0.1, "greedy", 0.003, 1, 15.0)])
    with pytest.raises(SystemExit) as e:
        tool.seed_stats(path, "beam5")
    assert str(e.value) == (f"plot_noise_ops: {path}: several groups for method seq at noise 0.1 (decoding beam / "
                            f"greedy); pass a results CSV whose rows differ only in method, noise, seed and search")


def test_two_lrs_are_refused_naming_the_lr(tool, tmp_path):
    path = results(tmp_path / "r.csv", [("word", 0.0, "-", 0.003, 1, 21.0), ("word", 0.0, "-", 0.001, 1, 18.0)])
    with pytest.raises(SystemExit) as e:
        tool.main([str(tmp_path / "o.png"), f"deletion={path}"])
    assert "several groups for method word at noise 0 (lr 0.001 / 0.003);" in str(e.value)


def test_a_missing_seed_is_counted_and_the_drop_paired(tool, tmp_path, capsys):
    """word's seed 2 at 0.1 is missing: its mean there is seed 1's alone (19.5), shown "(1)"; its Δ vs CE and its
    drop are taken on seed 1 only (19.5 - 18.5, 19.5 - 20.5), marked (1), not 19.5 - 19.0 printed as complete."""
    cells = [c for c in GRID if not (c[0] == "word" and c[1] == 0.1 and c[4] == 2)]
    tool.main([str(tmp_path / "o.png"), f"deletion={results(tmp_path / 'r.csv', cells)}"])
    out = capsys.readouterr().out.splitlines()
    assert out[3] == "| deletion | word-KD | 21.00 / 19.50 (1) | +1.00 / +1.00 (1) | -1.00 (1) |"
    assert out[6] == ("(2 seeds per point unless marked (k): over k seeds only; n/a: no such point; Δ and drop on "
                      "the seeds both points have)")


def test_a_method_missing_the_top_rate_gets_no_drop(tool, tmp_path, capsys):
    """seq has no 0.2 point: its 0 -> 0.1 drop would sit in the same column as the others' 0 -> 0.2."""
    cells = GRID + [(m, 0.2, "-", 0.003, s, b + s - 1.5 - 20 * 0.2) for m, b in (("none", 20.0), ("word", 21.0))
                    for s in (1, 2)]
    tool.main([str(tmp_path / "o.png"), f"deletion={results(tmp_path / 'r.csv', cells)}"])
    out = capsys.readouterr().out.splitlines()
    assert out[2:5] == ["| deletion | CE | 20.00 / 19.00 / 16.00 |  | -4.00 |",
                        "| deletion | word-KD | 21.00 / 20.00 / 17.00 | +1.00 / +1.00 / +1.00 | -4.00 |",
                        "| deletion | seq-KD | 25.00 / 24.00 / n/a | +5.00 / +5.00 / n/a | n/a (no 0.2) |"]
