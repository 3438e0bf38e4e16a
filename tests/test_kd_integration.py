"""In-process teacher -> word_kd student (online and cached) -> generate -> sacrebleu; bad input."""
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import sacrebleu
import torch

from fairseq_kd import checkpoint_safety, scoring
from fairseq_kd.cli import cache as cache_cli
from fairseq_kd.errors import KDInputError
from tests import helpers

pytestmark = pytest.mark.integration


def run_cache(data_bin, teacher, out_dir, *extra):
    args = cache_cli.get_parser().parse_args(
        [str(data_bin), "--teacher-path", str(teacher), "--out-dir", str(out_dir), "--topk", "4",
         "--no-progress", *extra])
    return cache_cli.main(args)


@pytest.fixture(scope="module")
def cache_dir(tiny_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    run_cache(tiny_teacher.data_bin, tiny_teacher.checkpoint, out, "--split", "train", "--split", "valid")
    return out


def test_word_kd_student_online_teacher_generates_and_scores(tiny_teacher, tmp_path):
    ckpt = helpers.train(tiny_teacher.data_bin, tmp_path / "student", task="kd_translation", max_epoch=3,
                         extra=["--teacher-path", str(tiny_teacher.checkpoint), "--criterion", "word_kd",
                                "--kd-alpha", "0.5", "--kd-temperature", "2"])
    state = checkpoint_safety.load_checkpoint(str(ckpt))
    assert not any("teacher" in k for k in state["model"])  # the teacher never enters the student's checkpoint
    n_student = sum(v.numel() for v in state["model"].values())
    n_teacher = sum(v.numel() for v in checkpoint_safety.load_checkpoint(str(tiny_teacher.checkpoint))["model"].values())
    assert n_student == n_teacher  # same arch: the optimizer state covers the student only
    hyps = helpers.generate(tiny_teacher.data_bin, ckpt)
    refs = (tiny_teacher.raw / "test.tgt").read_text().splitlines()
    assert len(hyps) == len(refs)
    # a tiny student after 3 epochs scores 0-0.35 BLEU whatever its loss (measured, CE and word-KD alike), so
    # no BLEU margin exists here (the KD-vs-CE margin is tests/test_system_multi30k.py's): check that it
    # decodes real output and that the project's scorer agrees with sacrebleu on it
    assert sum(bool(h.strip()) for h in hyps) >= len(hyps) // 2
    ours = scoring.score_lines(hyps, [refs], scoring.ScoreConfig(metrics=("bleu",)))["bleu"]["score"]
    assert ours == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)


def test_teacher_bleu_is_high(tiny_teacher):
    hyps = helpers.generate(tiny_teacher.data_bin, tiny_teacher.checkpoint)
    refs = (tiny_teacher.raw / "test.tgt").read_text().splitlines()
    exact = sum(h == r for h, r in zip(hyps, refs))
    assert exact >= len(refs) // 2  # the copy task is mostly solved
    assert sacrebleu.corpus_bleu(hyps, [refs]).score > 25.0


def test_word_kd_from_cache_trains_and_resumes(tiny_teacher, cache_dir, tmp_path):
    extra = ["--teacher-cache", str(cache_dir), "--teacher-path", str(tiny_teacher.checkpoint),
             "--criterion", "word_kd", "--kd-alpha", "0.5", "--kd-selection", "global",
             "--kd-selection-queue-size", "500"]
    save = tmp_path / "student"
    helpers.train(tiny_teacher.data_bin, save, task="kd_translation", max_epoch=1, extra=extra)
    first = checkpoint_safety.load_checkpoint(str(save / "checkpoint_last.pt"))
    queue = first["task_state"]["kd_selection_queue"]["values"]  # the global selection queue is checkpointed
    assert queue.numel() == 500
    task, _, crit = helpers.build_components(tiny_teacher.data_bin, [*extra, "--save-dir", str(save)])
    assert torch.equal(crit.queue.values, queue)  # ... and restored when training resumes from it
    helpers.train(tiny_teacher.data_bin, save, task="kd_translation", max_epoch=2, extra=extra)  # resumes
    second = checkpoint_safety.load_checkpoint(str(save / "checkpoint_last.pt"))
    assert second["optimizer_history"][-1]["num_updates"] == 2 * first["optimizer_history"][-1]["num_updates"]
    assert len(helpers.generate(tiny_teacher.data_bin, save / "checkpoint_last.pt")) == 40


def test_cached_and_online_topk_give_the_same_loss(tiny_teacher, cache_dir):
    for T in (1.0, 2.0):
        losses = []
        for cache_args in ([], ["--teacher-cache", str(cache_dir)]):
            task, model, crit = helpers.build_components(
                tiny_teacher.data_bin, ["--teacher-path", str(tiny_teacher.checkpoint), "--criterion", "word_kd",
                                        "--kd-alpha", "1.0", "--kd-topk", "4", "--kd-temperature", str(T), *cache_args])
            task.load_dataset("train")
            model.eval()
            sample = dict(helpers.first_batch(task, n=16), kd_split="train")  # as the task's train_step tags it
            _, _, log = crit(model, sample)
            losses.append((float(log["kd_loss"]), float(log["teacher_nll_loss"])))
        (online, t_online), (cached, t_cached) = losses
        assert cached == pytest.approx(online, rel=2e-3, abs=1e-3)
        assert t_cached == pytest.approx(t_online, rel=1e-4)


def test_hybrid_reads_the_cache_through_the_one_teacher_interface(tiny_teacher, cache_dir):
    """hybrid_kd on the data's targets (--seq-kd-targets data): its token-level KL from the
    cache equals the one from the online teacher's top-4; with online seq-KD targets the
    cache (made for the dataset's targets) is refused."""
    kds = []
    for cache_args in ([], ["--teacher-cache", str(cache_dir)]):
        task, model, crit = helpers.build_components(
            tiny_teacher.data_bin, ["--teacher-path", str(tiny_teacher.checkpoint), "--criterion", "hybrid_kd",
                                    "--seq-kd-targets", "data", "--kd-topk", "4", "--kd-temperature", "2",
                                    *cache_args])
        task.load_dataset("train")
        model.eval()
        _, _, log = crit(model, dict(helpers.first_batch(task, n=16), kd_split="train"))
        kds.append(float(log["kd_loss"]))
    assert kds[1] == pytest.approx(kds[0], rel=2e-3, abs=1e-3) and kds[0] > 0
    with pytest.raises(KDInputError, match="seq-kd-targets data"):
        helpers.build_components(tiny_teacher.data_bin, ["--teacher-path", str(tiny_teacher.checkpoint),
                                                         "--criterion", "hybrid_kd", "--teacher-cache", str(cache_dir)])


def test_cache_resumes_and_refuses_stale_or_truncated(tiny_teacher, tmp_path):
    out = tmp_path / "c"
    run_cache(tiny_teacher.data_bin, tiny_teacher.checkpoint, out, "--split", "valid", "--flush-every", "1",
              "--max-tokens", "60")
    complete = {f: (out / f).read_bytes() for f in os.listdir(out)}
    shutil.rmtree(out)  # a second run from scratch writes the same bytes (deterministic)
    run_cache(tiny_teacher.data_bin, tiny_teacher.checkpoint, out, "--split", "valid", "--flush-every", "1",
              "--max-tokens", "60")
    for f in os.listdir(out):
        assert (out / f).read_bytes() == complete[f]
    # a finished cache is validated and skipped
    assert run_cache(tiny_teacher.data_bin, tiny_teacher.checkpoint, out, "--split", "valid")[0]["status"] == "exists"

    task, _, _ = helpers.build_components(tiny_teacher.data_bin)
    task.load_dataset("valid")
    from fairseq_kd.cache import TeacherCache

    # stale: another teacher checkpoint (different bytes)
    other = tmp_path / "other.pt"
    state = torch.load(tiny_teacher.checkpoint)
    state["extra_state"] = {"note": "another teacher"}
    torch.save(state, other)
    with pytest.raises(KDInputError, match="stale: its teacher fingerprint"):
        TeacherCache.open(str(out), "valid", task.dataset("valid"), task, teacher_paths=str(other))
    # truncated file
    with open(out / "valid.probs.f16", "r+b") as f:
        f.truncate(10)
    with pytest.raises(KDInputError, match="truncated"):
        TeacherCache.open(str(out), "valid", task.dataset("valid"), task)
    # missing index
    good = tmp_path / "good"
    run_cache(tiny_teacher.data_bin, tiny_teacher.checkpoint, good, "--split", "valid")
    cache = TeacherCache.open(str(good), "valid", task.dataset("valid"), task)
    sample = helpers.first_batch(task, "valid", n=2)
    sample["id"] = torch.tensor([int(sample["id"][0]), 10_000])  # row 0 real, row 1 out of range
    with pytest.raises(KDInputError, match="no entry for sentence 10000"):
        cache.lookup(sample, sample["target"], task.target_dictionary.pad())


def test_cache_partial_run_resumes_to_identical_files(tiny_teacher, tmp_path):
    """Kill-and-resume: a run that died after half of its batch plan, re-run: same bytes as one
    uninterrupted run (every sentence is computed in the same batch as without the kill)."""
    from fairseq_kd.cache_writer import TeacherCacheWriter

    full = tmp_path / "full"
    run_cache(tiny_teacher.data_bin, tiny_teacher.checkpoint, full, "--split", "train")
    resumed = tmp_path / "resumed"
    args = cache_cli.get_parser().parse_args(
        [str(tiny_teacher.data_bin), "--teacher-path", str(tiny_teacher.checkpoint), "--out-dir", str(resumed)])
    task = cache_cli.build_task(args)
    task.load_dataset("train")
    teacher = task.load_teacher()
    ds = task.dataset("train")
    writer = TeacherCacheWriter(str(resumed), "train", ds, 4, cache_cli.split_fingerprint(task, "train", ds, teacher, "fp32"))
    plan = cache_cli.plan_batches(ds, args)
    assert len(plan) >= 2
    done = []
    for batch in plan[: len(plan) // 2]:  # compute the first half of the plan, then "die"
        s = ds.collater([ds[int(i)] for i in batch])
        lp = teacher.log_probs(s["net_input"])
        v, ids = lp.topk(4, -1)
        lengths = s["target"].ne(task.target_dictionary.pad()).sum(-1).tolist()
        writer.write(s["id"].tolist(), lengths, ids.int(), v.exp().half(), lp.gather(-1, s["target"].unsqueeze(-1)).squeeze(-1))
        done += s["id"].tolist()
    writer.mark_done(done)
    del writer
    summary = run_cache(tiny_teacher.data_bin, tiny_teacher.checkpoint, resumed, "--split", "train")
    assert summary[0]["sentences"] == len(ds) - len(done)  # only the rest is computed
    for name in ("offsets.i64", "ids.i32", "probs.f16", "gold.f32", "meta.json"):
        assert (resumed / f"train.{name}").read_bytes() == (full / f"train.{name}").read_bytes(), name


def test_teacher_dictionary_mismatch_names_both_files(tiny_teacher, tmp_path):
    other_raw = tmp_path / "raw"
    helpers.write_parallel(other_raw, "train", [("w1 w2 zz", "w1 w2 zz")] * 5)
    helpers.write_parallel(other_raw, "valid", [("w1", "w1")])
    other_bin = helpers.preprocess(other_raw, tmp_path / "bin", splits=("train", "valid"))
    with pytest.raises(KDInputError) as err:
        helpers.build_components(other_bin, ["--teacher-path", str(tiny_teacher.checkpoint)])
    msg = str(err.value)
    assert str(tiny_teacher.data_bin / "dict.src.txt") in msg and str(other_bin / "dict.src.txt") in msg
    assert "first at index" in msg


def test_missing_teacher_checkpoint_is_a_clear_error(tiny_teacher, tmp_path):
    with pytest.raises(KDInputError, match="teacher checkpoint not found: .*nope.pt"):
        helpers.build_components(tiny_teacher.data_bin, ["--teacher-path", str(tmp_path / "nope.pt")])


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_with_foreign_pickle_is_refused_then_trusted_explicitly(tiny_teacher, tmp_path):
    state = torch.load(tiny_teacher.checkpoint)
    state["extra_state"]["payload"] = np.random.RandomState(0)  # a type fairseq never stores
    bad = tmp_path / "legacy.pt"
    torch.save(state, bad)
    with pytest.raises(KDInputError, match=r"refusing to load checkpoint .*legacy.pt: it stores numpy.random.*randomstate_ctor.*--trust-checkpoint"):
        checkpoint_safety.load_checkpoint(str(bad))
    loaded = checkpoint_safety.load_checkpoint(str(bad), trust_file=True)  # explicit opt-in for this file only
    assert "payload" in loaded["extra_state"]
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": Evil()}, evil)
    with pytest.raises(KDInputError, match="posix.system|os.system|refusing"):
        checkpoint_safety.load_checkpoint(str(evil))


def test_fairseq_checkpoint_loads_without_trust(tiny_teacher, tmp_path):
    assert "extra_state" in checkpoint_safety.load_checkpoint(str(tiny_teacher.checkpoint))
    # --eval-bleu stores NumPy count arrays (and scalars) in the saved metric state
    state = torch.load(tiny_teacher.checkpoint)
    state["extra_state"]["eval_bleu_counts"] = [np.array([3, 2, 1, 0], dtype=np.int64), np.float64(1.5)]
    path = tmp_path / "eval_bleu.pt"
    torch.save(state, path)
    loaded = checkpoint_safety.load_checkpoint(str(path))
    assert loaded["extra_state"]["eval_bleu_counts"][0].tolist() == [3, 2, 1, 0]
    with pytest.raises(pickle.UnpicklingError):  # torch's default really is weights_only
        _raw_weights_only(tiny_teacher.checkpoint)


def _raw_weights_only(path):
    """torch.load without fairseq-kd's allowlist refuses a fairseq checkpoint (why the allowlist exists)."""
    with torch.serialization.safe_globals([]):
        saved = list(torch.serialization.get_safe_globals())
        torch.serialization.clear_safe_globals()
        try:
            return torch.load(path)
        finally:
            torch.serialization.add_safe_globals(saved)


def test_a_cache_stands_in_for_a_clean_source_teacher_under_noise_never_a_noisy_one(tiny_teacher, cache_dir):
    """Source noise with the teacher reading the clean source: the cache gives the online teacher's loss.
    With the teacher reading the noisy source, the cache (clean-source distributions) is refused."""
    base = ["--teacher-path", str(tiny_teacher.checkpoint), "--criterion", "word_kd", "--kd-alpha", "1.0",
            "--kd-topk", "4", "--noise-substitution", "0.3"]
    losses = []
    for cache_args in ([], ["--teacher-cache", str(cache_dir)]):
        task, model, crit = helpers.build_components(tiny_teacher.data_bin, [*base, *cache_args,
                                                                             "--noise-teacher-input", "clean"])
        task.load_dataset("train")
        model.eval()
        sample = dict(helpers.first_batch(task, n=16), kd_split="train")
        assert "teacher_net_input" in sample  # the student's source was noised, the teacher's was not
        losses.append(float(crit(model, sample)[2]["kd_loss"]))
    assert losses[1] == pytest.approx(losses[0], rel=2e-3, abs=1e-3)
    task, _, _ = helpers.build_components(tiny_teacher.data_bin, [*base, "--teacher-cache", str(cache_dir),
                                                                  "--noise-teacher-input", "noisy"])
    with pytest.raises(KDInputError, match="noise-teacher-input noisy"):
        task.load_dataset("train")


def test_hidden_states_online_with_the_distribution_from_the_cache(tiny_teacher, cache_dir):
    """word_kd with hidden-state KD, --teacher-cache beside --teacher-path: the distribution comes from the
    cache, the layer outputs from the teacher's encoder alone; both terms equal the all-online ones."""
    base = ["--teacher-path", str(tiny_teacher.checkpoint), "--criterion", "word_kd", "--kd-alpha", "0.5",
            "--kd-topk", "4", "--kd-hidden-weight", "1.0", "--kd-hidden-loss", "cosine"]
    logs, calls = [], []
    for cache_args in ([], ["--teacher-cache", str(cache_dir)]):
        torch.manual_seed(0)  # the criterion's projection: the same initial weights both times
        task, model, crit = helpers.build_components(tiny_teacher.data_bin, [*base, *cache_args])
        task.load_dataset("train")
        model.eval()
        ensemble = task.teacher.ensemble
        seen = []
        decoder = ensemble.models[0].decoder
        hook = decoder.register_forward_hook(lambda *a: seen.append("decoder"))
        _, _, log = crit(model, dict(helpers.first_batch(task, n=16), kd_split="train"))
        hook.remove()
        logs.append({k: float(log[k]) for k in ("kd_loss", "hidden_loss")})
        calls.append(seen)
    (online, cached) = logs
    assert cached["kd_loss"] == pytest.approx(online["kd_loss"], rel=2e-3, abs=1e-3)
    assert cached["hidden_loss"] == pytest.approx(online["hidden_loss"], rel=1e-5) and online["hidden_loss"] > 0
    assert calls == [["decoder"], []]  # with the cache the teacher's decoder never runs
