"""fairseq-kd-report's plots hold the numbers of the results: each figure's error-bar series are read
back from the figure as it is saved (points, error bars, labels, axes) and checked against seed
means and sample standard deviations computed by hand from tests/test_report.py's rows."""
import math

import pytest

from fairseq_kd import report as R
from fairseq_kd import report_plots as P
from fairseq_kd.cli import report as cli
from tests.test_report import HEADER, ROWS

S2 = math.sqrt(0.5)  # sample std of (20, 21); of (30, 32, 34) it is 2; of (10, 12) and (20, 22) sqrt(2)


@pytest.fixture
def saved(monkeypatch):
    """{file name: {"xlabel", "title", "xscale", "series": {label: [(x, mean, std), ...]}}} of every saved figure."""
    import os

    from matplotlib.figure import Figure

    figures, real = {}, Figure.savefig

    def recording(fig, fname, *args, **kwargs):
        ax = fig.axes[0]
        series = {}
        for c in ax.containers:  # one ErrorbarContainer per series: (data line, caplines, bar collections)
            xs, ms = c.lines[0].get_xdata(), c.lines[0].get_ydata()
            bars = c.lines[2][0].get_segments()  # one vertical segment per point: (x, m - s) -> (x, m + s)
            assert all(seg[0][0] == seg[1][0] == x for seg, x in zip(bars, xs))
            stds = [(seg[1][1] - seg[0][1]) / 2 for seg in bars]
            series[c.get_label()] = [(float(x), float(m), float(s)) for x, m, s in zip(xs, ms, stds)]
        name = os.path.basename(getattr(fname, "name", fname))
        name = name.lstrip(".").split(".png")[0] + ".png"  # atomic_open writes .NAME.tmp.PID
        figures[name] = {"xlabel": ax.get_xlabel(), "title": ax.get_title(), "xscale": ax.get_xscale(),
                         "series": series}
        return real(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    return figures


def approx_series(expected):
    return {label: [pytest.approx(p, abs=1e-9) for p in pts] for label, pts in expected.items()}


def test_cli_plots_hold_seed_means_and_stds(tmp_path, saved):
    results = tmp_path / "results.csv"
    results.write_text(HEADER + "\n".join(ROWS) + "\n")
    curves = tmp_path / "curves.csv"
    curves.write_text("method,noise,arch,decoding,lr,seed,updates,valid_bleu\n"
                      "none,0,tiny,-,0.0005,1,50,10\nnone,0,tiny,-,0.0005,2,50,12\n"
                      "none,0,tiny,-,0.0005,1,100,20\nnone,0,tiny,-,0.0005,2,100,22\n")
    assert cli.cli_main([str(results), "--out-dir", str(tmp_path / "figs")]) == 0
    assert sorted(saved) == ["bleu_vs_noise.png", "bleu_vs_params.png", "bleu_vs_updates.png"]
    noise = saved["bleu_vs_noise.png"]
    assert noise["series"] == approx_series({"none arch=tiny decoding=-": [(0.0, 32.0, 2.0)],
                                             "word arch=tiny decoding=- (n=2)": [(0.1, 20.5, S2)],
                                             "seq arch=big decoding=beam (n=1)": [(0.0, 36.5, 0.0)]})
    assert noise["xscale"] == "linear" and noise["xlabel"].startswith("noise")
    params = saved["bleu_vs_params.png"]
    assert params["series"] == approx_series({"none noise=0 decoding=-": [(1000.0, 32.0, 2.0)],
                                              "word noise=0.1 decoding=- (n=2)": [(1000.0, 20.5, S2)],
                                              "seq noise=0 decoding=beam (n=1)": [(5000.0, 36.5, 0.0)]})
    assert params["xscale"] == "log"
    updates = saved["bleu_vs_updates.png"]  # from the curves: validation BLEU per update, seeds averaged
    assert updates["series"] == approx_series({"none lr=0.0005": [(50.0, 11.0, math.sqrt(2)),
                                                                  (100.0, 21.0, math.sqrt(2))]})
    assert all((tmp_path / "figs" / name).stat().st_size > 0 for name in saved)


def test_updates_plot_without_curves_holds_the_final_points(tmp_path, saved):
    results = tmp_path / "results.csv"
    results.write_text(HEADER + "\n".join(ROWS) + "\n")
    P.make_plots(R.load_csv(str(results)), None, str(tmp_path / "p"))
    assert saved["bleu_vs_updates.png"]["series"] == approx_series({
        "none lr=0.0005 arch=tiny noise=0 decoding=-": [(100.0, 32.0, 2.0)],
        "word lr=0.0005 arch=tiny noise=0.1 decoding=- (n=2)": [(100.0, 20.5, S2)],
        "seq lr=0.0005 arch=big noise=0 decoding=beam (n=1)": [(100.0, 36.5, 0.0)]})


def test_a_curve_says_where_its_seeds_stop(tmp_path, saved):
    """A patience study: seeds 2 and 3 stop at update 200, seed 1 goes on to 400. From 300 the line is seed 1
    alone (std 0); its label says so, and a line with every seed everywhere keeps its plain label."""
    results = tmp_path / "results.csv"
    results.write_text(HEADER + "\n".join(ROWS) + "\n")
    curves = [dict(method=m, noise=0.0, arch="tiny", decoding="-", teacher="-", lr=0.0005, seed=s, updates=u,
                   valid_bleu=10.0 * s + u / 100 + (m == "word"))
              for m in ("none", "word") for s in (1, 2, 3) for u in (100, 200, 300, 400)
              if m == "word" or s == 1 or u <= 200]
    P.make_plots(R.load_csv(str(results)), curves, str(tmp_path / "p"))
    assert saved["bleu_vs_updates.png"]["series"] == approx_series({
        "none lr=0.0005 (n=3 at 100-200, 1 at 300-400)": [(100.0, 21.0, 10.0), (200.0, 22.0, 10.0),
                                                          (300.0, 13.0, 0.0), (400.0, 14.0, 0.0)],
        "word lr=0.0005": [(u / 1, 21.0 + u / 100, 10.0) for u in (100, 200, 300, 400)]})


def test_count_note():
    assert P.count_note([(0.0, 2), (0.1, 2)], 2) == ""
    assert P.count_note([(0.0, 2), (0.1, 1), (0.2, 2), (0.3, 2)], 2) == "(n=2 at 0, 1 at 0.1, 2 at 0.2-0.3)"
