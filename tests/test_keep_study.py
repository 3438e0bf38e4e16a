"""docs/results/tools/keep_study.py: a finished study's rows and hypotheses kept (gzipped) so that a
report on the kept folder pairs seeds exactly as on the out-dir."""
import gzip
import json
import subprocess
import sys

import sacrebleu

from fairseq_kd.cli import report as report_cli
from tests.helpers import load_results_tool

keep = load_results_tool("keep_study")
HEADER = ("method,noise,arch,decoding,lr,seed,teacher,search,parameters,bleu,chrf,tok_bleu,signature,train_time,"
          "updates,best_update,stop,cell,hyp")


def _study(root, refs):
    """Two CE seeds that drop a word on some lines and two word-KD seeds that are the references."""
    rows = []
    for method, seed, lines in (("none", 1, [r if i % 3 else r.rsplit(" ", 1)[0] for i, r in enumerate(refs)]),
                                ("none", 2, [r if i % 4 else r.rsplit(" ", 1)[0] for i, r in enumerate(refs)]),
                                ("word", 1, refs), ("word", 2, refs)):
        cell = f"{method}_noise0_tiny_nodec_lr0.001_seed{seed}"
        (root / "cells" / cell).mkdir(parents=True)
        (root / "cells" / cell / "hyp.beam5.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        bleu = round(sacrebleu.corpus_bleu(lines, [refs]).score, 2)  # as the study records it (the report checks)
        rows.append(f"{method},0,tiny,-,0.001,{seed},-,beam5,1000,{bleu},60.0,50.0,sig,1.0,100,100,patience,{cell},"
                    f"cells/{cell}/hyp.beam5.txt")
    (root / "results.csv").write_text(HEADER + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    (root / "study.json").write_text(json.dumps({"test_ref": "ref.txt"}))
    (root / "ref.txt").write_text("\n".join(refs) + "\n")
    return root


def test_kept_study_reports_like_the_out_dir(tmp_path, capsys):
    refs = [f"a small red dog number {i} sat on the mat" for i in range(30)]
    src = _study(tmp_path / "out", refs)
    dst = tmp_path / "kept"
    counts = keep.keep_study(str(src), str(dst))
    assert counts == {"rows_files": 1, "hyps": 4, "written": 6}  # 4 hypothesis files, results.csv, study.json
    kept = dst / "cells" / "word_noise0_tiny_nodec_lr0.001_seed1" / "hyp.beam5.txt.gz"
    assert gzip.decompress(kept.read_bytes()).decode().splitlines() == refs
    assert not (dst / "cells" / "word_noise0_tiny_nodec_lr0.001_seed1" / "hyp.beam5.txt").exists()
    assert keep.keep_study(str(src), str(dst))["written"] == 0  # same bytes: nothing rewritten (no gzip timestamp)

    ref = str(src / "ref.txt")
    for d, out in ((src, "r_src"), (dst, "r_dst")):
        assert report_cli.cli_main([str(d / "results.csv"), "--test-ref", ref, "--no-plots",
                                    "--out-dir", str(tmp_path / out)]) == 0
    capsys.readouterr()
    a, b = (json.loads((tmp_path / o / "summary.json").read_text()) for o in ("r_src", "r_dst"))
    assert a == b and next(s for s in b if s["method"] == "word")["vs_baseline"]["p_value"] == 0.0


def test_refuses_what_it_cannot_keep(tmp_path):
    tool = keep.__file__
    empty = subprocess.run([sys.executable, tool, str(tmp_path), str(tmp_path / "k")], capture_output=True, text=True)
    assert empty.returncode == 2 and "no results.csv" in empty.stderr
    src = _study(tmp_path / "out", ["a b c"] * 3)
    (src / "cells" / "none_noise0_tiny_nodec_lr0.001_seed2" / "hyp.beam5.txt").unlink()
    gone = subprocess.run([sys.executable, tool, str(src), str(tmp_path / "k")], capture_output=True, text=True)
    assert gone.returncode == 2 and "none_noise0_tiny_nodec_lr0.001_seed2/hyp.beam5.txt" in gone.stderr
    assert "re-run the study" in gone.stderr
