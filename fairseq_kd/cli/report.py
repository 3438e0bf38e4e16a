"""fairseq-kd-report: results.csv -> markdown table (mean ± std over seeds) and PNG plots.

    fairseq-kd-report exp/study/results.csv            # table on stdout, files beside it
    fairseq-kd-report results.csv --out-dir figs --format json
"""
import argparse
import logging
import os
import sys

from fairseq_kd import fileio, guard, integrity
from fairseq_kd.errors import KDInputError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairseq-kd-report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("input")
    g.add_argument("results", help="results.csv written by fairseq-kd-study")
    g.add_argument("--curves", default=None,
                   help="validation curves csv (default: curves.csv beside results, if present)")
    g = p.add_argument_group("significance (each KD method against the baseline at the same coordinates)")
    g.add_argument("--test-ref", default=None,
                   help="raw reference of the decoded test split (default: test_ref of study.json beside results; "
                        "needed for an extra split's results.SPLIT.csv, whose reference study.json does not record)")
    g.add_argument("--baseline", default="none", metavar="METHOD",
                   help="the method every other one is compared with (e.g. word: seq and hybrid against word-KD)")
    g.add_argument("--bootstrap-samples", type=int, default=1000, help="paired bootstrap resamples")
    g.add_argument("--no-significance", action="store_true", help="mean ± std only")
    g = p.add_argument_group("teacher-CE gap")
    g.add_argument("--teacher-bleu", nargs="+", default=None, metavar="[SEARCH=]BLEU",
                   help="the teacher's BLEU on the same test split, per test search (beam5=39.4 greedy=38.9; a bare "
                        "number when the results hold one search): adds a 'gap closed' column, "
                        "(student - CE) / (teacher - CE) (default: no column)")
    g = p.add_argument_group("output")
    g.add_argument("--out-dir", default=None, help="where table.md, summary.json and the PNGs go "
                                                  "(default: the results file's folder; report.SPLIT/ in it for "
                                                  "results.SPLIT.csv)")
    g.add_argument("--format", choices=("markdown", "json"), default="markdown", help="what goes to stdout")
    g.add_argument("--no-plots", action="store_true", help="only the table")
    return p


def cli_main(argv=None) -> int:
    # importing fairseq leaves the root logger at DEBUG (fairseq/tasks/frm_text_to_speech.py)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)
    from fairseq_kd import report as R
    from fairseq_kd import report_plots as P

    args = get_parser().parse_args(argv)
    split = R.extra_split(args.results)  # results.SPLIT.csv: an extra test split, with its own reference and outputs
    out_dir = args.out_dir or os.path.join(os.path.dirname(os.path.abspath(args.results)),
                                           f"report.{split}" if split else "")
    try:
        if split and not (args.test_ref or args.no_significance):
            raise KDInputError(f"{args.results} holds the rows of the extra test split {split!r}, whose reference "
                               f"study.json does not record (its test_ref is the main split's): pass --test-ref "
                               f"with the raw reference of {split} (prepare_multi30k.sh writes raw/{split}.LANG)")
        if args.bootstrap_samples < 1:
            raise KDInputError(f"--bootstrap-samples {args.bootstrap_samples}: pass a number of resamples >= 1 "
                               f"(1000 is sacrebleu's default)")
        guard.check_paths({"results": args.results, "--curves": args.curves},
                          {"--out-dir": [os.path.join(out_dir, n) for n in R.OUTPUT_FILES]})
        rows = R.load_csv(args.results)
        if not rows:
            raise KDInputError(f"{args.results}: no result rows yet; run fairseq-kd-study first")
        curves_path = args.curves or os.path.join(os.path.dirname(os.path.abspath(args.results)), "curves.csv")
        curves = None
        if os.path.isfile(curves_path):
            curves = [r for r in R.load_csv(curves_path, required=("method", "noise", "arch", "decoding", "lr", "seed",
                                                                   "updates", "valid_bleu"))
                      if r["valid_bleu"] != ""] or None  # points without --eval-bleu are not plotted
        elif args.curves:
            raise KDInputError(f"--curves {args.curves}: no such file")
        summary = R.summarize(rows)
        if not args.no_significance:
            results_dir = os.path.dirname(os.path.abspath(args.results))
            R.compare_to_baseline(summary, results_dir, R.test_references(results_dir, args.test_ref),
                                  n_samples=args.bootstrap_samples, baseline=args.baseline)
        if args.teacher_bleu is not None:
            R.add_gap_closed(summary, R.parse_teacher_bleu(args.teacher_bleu, [r["search"] for r in rows]))
        table = R.markdown_table(summary)
        os.makedirs(out_dir, exist_ok=True)
        for name, text in (("table.md", table), ("summary.json", integrity.dumps_json(summary, indent=1))):
            fileio.atomic_write_text(os.path.join(out_dir, name), text)
        plots = [] if args.no_plots else P.make_plots(rows, curves, out_dir)
    except KDInputError as e:
        print(f"fairseq-kd-report: error: {e}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(integrity.dumps_json({"summary": summary, "plots": plots, "table": os.path.join(out_dir, "table.md")},
                                   indent=1))
    else:
        sys.stdout.write(table)
        for p in plots:
            print(f"wrote {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
