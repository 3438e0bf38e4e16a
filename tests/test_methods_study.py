"""The study runs the methods of issue 12: method ``onpolicy`` (criterion onpolicy_kd), and the
divergence / gate / hidden-state options as method arguments, as fairseq itself parses them;
and one onpolicy cell end to end (train, decode, score, record) on tiny data."""
import csv

import pytest

from fairseq_kd import study as S
from tests.test_study import TINY_TRAIN_ARGS


def parsed(cfg, method, decoding=S.NO_DECODING):
    from fairseq import options

    argv = S.train_command(cfg, S.Cell(method, 0.0, "transformer", decoding, 1e-3, 1), "data-bin", "save")[1:]
    return vars(options.parse_args_and_arch(options.get_training_parser(), argv))


def test_method_args_reach_the_criteria():
    cfg = S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="de", target_lang="en", teacher="t.pt",
                        label_smoothing=0.1, method_args={
                            "onpolicy": "--onpolicy-lambda 0.5 --kd-divergence jsd --kd-jsd-beta 0.3",
                            "word": "--kd-divergence reverse_kl --kd-hidden-weight 0.2 --kd-hidden-decoder",
                            "hybrid_online": "--hybrid-gate uncertainty --kd-hidden-weight 0.1"})
    onp = parsed(cfg, "onpolicy")
    assert (onp["criterion"], onp["onpolicy_lambda"], onp["kd_divergence"], onp["kd_jsd_beta"]) == \
        ("onpolicy_kd", 0.5, "jsd", 0.3)
    assert onp["teacher_path"] == "t.pt" and onp["label_smoothing"] == 0.1
    word = parsed(cfg, "word")
    assert (word["kd_divergence"], word["kd_hidden_weight"], word["kd_hidden_decoder"]) == ("reverse_kl", 0.2, True)
    hyb = parsed(cfg, "hybrid_online", "greedy")
    assert (hyb["criterion"], hyb["hybrid_gate"], hyb["kd_hidden_weight"]) == ("hybrid_kd", "uncertainty", 0.1)


@pytest.mark.integration
def test_onpolicy_cell_end_to_end(tiny_teacher, tmp_path):
    cfg = S.StudyConfig(data=str(tiny_teacher.data_bin), out_dir=str(tmp_path / "study"),
                        test_ref=str(tiny_teacher.raw / "test.tgt"), source_lang="src", target_lang="tgt",
                        teacher=str(tiny_teacher.checkpoint), methods=["onpolicy"], seeds=[1], lrs=[0.005],
                        max_update=8, warmup_updates=4, validate_interval_updates=4, max_tokens=1000, beam=1,
                        bpe="none", train_args=TINY_TRAIN_ARGS,
                        method_args={"onpolicy": "--onpolicy-lambda 0.5 --onpolicy-sampling greedy "
                                                 "--kd-divergence jsd --kd-hidden-weight 0.1"})
    summary = S.Study(cfg, runner=S.run_inprocess).run(progress=False)
    rows = list(csv.DictReader(open(summary["results"])))
    assert [(r["method"], r["updates"]) for r in rows] == [("onpolicy", "8")]
    assert float(rows[0]["bleu"]) >= 0 and rows[0]["signature"]
