"""The study runs the on-policy and divergence methods: method ``onpolicy`` (criterion onpolicy_kd), and the
divergence / gate / hidden-state options as method arguments, as fairseq itself parses them;
and one onpolicy cell end to end (train, decode, score, record) on tiny data."""
import csv

import pytest

from fairseq_kd import study as S
from fairseq_kd.errors import KDInputError
from tests.test_study import TINY_TRAIN_ARGS, corpus, fake_runner, make_cfg  # noqa: F401  (corpus: fixture)


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
    import torch

    from fairseq_kd import scoring
    from tests import helpers

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
    assert rows[0]["signature"]
    # the cell's checkpoint was trained 8 updates by onpolicy_kd with the cell's own options
    ckpt = tmp_path / "study" / "cells" / rows[0]["cell"] / "checkpoints" / "checkpoint_last.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    crit = state["cfg"]["criterion"]
    assert (crit["_name"], crit["onpolicy_lambda"], crit["onpolicy_sampling"], crit["kd_divergence"]) == \
        ("onpolicy_kd", 0.5, "greedy", "jsd")
    assert state["optimizer_history"][-1]["num_updates"] == 8
    # and its recorded BLEU is that checkpoint's: fairseq-generate with the study's search (kd_translation: each
    # sentence stops at its own length limit; an 8-update model loops, and --task translation caps the batch)
    hyps = helpers.generate(tiny_teacher.data_bin, ckpt, beam=1,
                            extra=["--max-len-a", "1.2", "--max-len-b", "10", "--task", "kd_translation"])
    expected = scoring.score_lines(hyps, [scoring.read_lines(cfg.test_ref)])["bleu"]["score"]
    assert float(rows[0]["bleu"]) == round(expected, 2)


def test_method_variants_are_cells_of_their_own_with_the_base_flags_then_theirs():
    cfg = S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="de", target_lang="en", teacher="t.pt",
                        methods=["word", "word.rkl", "hybrid", "hybrid.unc"], decodings=["beam"],
                        method_args={"word": "--kd-alpha 0.7", "word.rkl": "--kd-divergence reverse_kl",
                                     "hybrid": "--hybrid-weight 0.3", "hybrid.unc": "--hybrid-gate uncertainty"})
    cells = S.build_grid(cfg)
    assert [(c.method, c.decoding) for c in cells] == [
        ("word", "-"), ("word.rkl", "-"), ("hybrid", "beam"), ("hybrid.unc", "beam")]
    assert len({c.key() for c in cells}) == 4 and cells[1].slug().startswith("word.rkl_noise0_")
    word, rkl = parsed(cfg, "word"), parsed(cfg, "word.rkl")
    assert (word["criterion"], word["kd_alpha"], word["kd_divergence"]) == ("word_kd", 0.7, "forward_kl")
    assert (rkl["criterion"], rkl["kd_alpha"], rkl["kd_divergence"]) == ("word_kd", 0.7, "reverse_kl")
    hyb, unc = parsed(cfg, "hybrid", "beam"), parsed(cfg, "hybrid.unc", "beam")
    assert (hyb["hybrid_gate"], hyb["hybrid_weight"]) == ("fixed", 0.3)
    assert (unc["criterion"], unc["hybrid_gate"], unc["hybrid_weight"]) == ("hybrid_kd", "uncertainty", 0.3)
    assert unc["seq_kd_targets"] == "data" and unc["teacher_path"] == "t.pt"
    for bad in (["wordy"], ["word.a b"], ["word..x"]):
        with pytest.raises(KDInputError, match="unknown method"):
            S.StudyConfig(data="d", out_dir="o", test_ref="r", source_lang="de", target_lang="en",
                          teacher="t.pt", methods=bad).validate()


def test_a_new_variant_joins_a_finished_study_but_flags_with_results_stay(corpus, tmp_path):
    out = tmp_path / "study"
    launched = []
    runner = fake_runner(launched)

    def run(methods, method_args):
        runner.ref = make_cfg(corpus, out).test_ref
        cfg = make_cfg(corpus, out, methods=methods, noise=[0.0], method_args=method_args)
        return S.Study(cfg, runner=runner).run(progress=False)

    assert run(["none"], {})["ran"] == 1
    assert run(["none", "none.d2"], {"none.d2": "--dropout 0.2"})["ran"] == 1  # a new variant: its cell only
    assert launched[-2:] == ["fairseq-train", "fairseq-generate"]
    with pytest.raises(KDInputError, match=r"method_args\[none.d2\]"):  # its flags now have results
        run(["none", "none.d2"], {"none.d2": "--dropout 0.3"})
    with pytest.raises(KDInputError, match=r"method_args\[none\]"):  # so do the base method's
        run(["none"], {"none": "--dropout 0.1"})
    again = run(["none", "none.d2"], {"none.d2": "--dropout 0.2"})
    assert again["ran"] == 0 and again["skipped"] == 2
    methods = [r["method"] for r in csv.DictReader(open(again["results"]))]
    assert methods == ["none", "none.d2"]
