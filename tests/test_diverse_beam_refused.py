"""``--diverse-beam-groups`` / ``--diverse-beam-strength`` are refused by name wherever we take
fairseq-generate flags.

Why: fairseq's ``DiverseBeamSearch`` keeps its group overlap for the rows of the batch at step 0 but
indexes it with ``original_batch_idxs``, which SequenceGenerator sets to the sample ids: from the second
batch on (ids >= batch size) fairseq-generate dies with an IndexError, under ``--task translation`` as
under ``--task kd_translation``, and before that it reads other sentences' rows. It also keeps only
``--beam`` candidates a step (``candidate_multiple=1``), so a hypothesis that ends takes its beam with it:
even ``--diverse-beam-groups 1`` does not give plain beam search. Both are fairseq's own bugs in
site-packages; the refusal (``study.preflight.REFUSED_GEN_FLAGS``) names the flag, why, and the way on.
"""
import pytest

from fairseq_kd.errors import KDInputError
from tests import helpers

MAXLEN = ["--max-len-a", "1.2", "--max-len-b", "10", "--batch-size", "8"]  # 24 test sentences: 3 batches


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("diverse")
    raw = helpers.make_synthetic_corpus(root / "raw", n_train=100, n_valid=20, n_test=24)
    data_bin = helpers.preprocess(raw, root / "bin")
    ckpt = helpers.train(data_bin, root / "model", max_epoch=1, max_tokens=2000)
    return helpers.TinyTeacher(raw=raw, data_bin=data_bin, checkpoint=ckpt)


@pytest.mark.integration
def test_fairseq_diverse_beam_search_dies_on_the_second_batch(tiny):
    """The cause, under fairseq's own task: the group overlap indexed by sample id."""
    assert len(helpers.generate(tiny.data_bin, tiny.checkpoint, beam=4, extra=MAXLEN)) == 24
    with pytest.raises(IndexError, match="out of bounds"):
        helpers.generate(tiny.data_bin, tiny.checkpoint, beam=4, extra=[*MAXLEN, "--diverse-beam-groups", "2"])


@pytest.mark.integration
@pytest.mark.parametrize("flags, named", [(["--diverse-beam-groups", "2"], "--diverse-beam-groups"),
                                          (["--diverse-beam-groups", "1"], "--diverse-beam-groups"),
                                          (["--diverse-beam-strength", "0.2"], "--diverse-beam-strength")])
def test_kd_translation_refuses_diverse_beam_search_by_name(tiny, flags, named):
    with pytest.raises(KDInputError, match=f"kd_translation has {named}, which is refused: fairseq's "
                                           "DiverseBeamSearch .*sample id.* use --sampling"):
        helpers.generate(tiny.data_bin, tiny.checkpoint, beam=4, extra=[*MAXLEN, "--task", "kd_translation", *flags])
    # plain beam search through the same task still decodes every sentence
    assert len(helpers.generate(tiny.data_bin, tiny.checkpoint, beam=4,
                                extra=[*MAXLEN, "--task", "kd_translation"])) == 24


@pytest.mark.parametrize("gen_args, named", [("--diverse-beam-groups 2", "--diverse-beam-groups"),
                                             ("--lenpen 1.0 --diverse-beam-strength=0.3", "--diverse-beam-strength")])
def test_study_gen_args_refuse_diverse_beam_search_before_anything_runs(gen_args, named):
    from fairseq_kd import study as S

    base = dict(data="d", out_dir="o", test_ref="r", source_lang="s", target_lang="t", methods=["word"])
    with pytest.raises(KDInputError, match=f"--gen-args has {named}, which is refused: .*--sampling"):
        S.StudyConfig(**base, gen_args=gen_args).validate()


@pytest.mark.parametrize("module", ["fairseq_kd.cli.distill", "fairseq_kd.cli.translate"])
def test_tools_with_their_own_search_flags_do_not_take_diverse_beam_search(module, capsys):
    """fairseq-kd-distill and fairseq-kd-translate take no free-form generate flags: argparse refuses them."""
    import importlib

    parser = importlib.import_module(module).get_parser()
    for flag in ("--diverse-beam-groups", "--diverse-beam-strength"):
        with pytest.raises(SystemExit):
            parser.parse_args(["x", "--data", "d", "-o", "o", flag, "2"])
        assert flag in capsys.readouterr().err


def test_one_table_names_each_refused_flag_with_why_and_instead():
    from fairseq_kd.export.decode import UNREPRODUCED
    from fairseq_kd.study.preflight import REFUSED_GEN_FLAGS, refused_gen_flag_message

    for flag in REFUSED_GEN_FLAGS:
        assert flag in UNREPRODUCED  # and CTranslate2's table refuses it too
        message = refused_gen_flag_message("X", flag)
        assert message.startswith(f"X has {flag}, which is refused") and "--nbest" in message
