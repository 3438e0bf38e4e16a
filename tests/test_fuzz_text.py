"""Fuzz tier, text tools: fairseq-kd-score, fairseq-kd-noise, fairseq-kd-report, fairseq-kd-ladder fed generated
bad inputs (encodings, line endings, BOMs, NUL bytes, empty and huge lines, misaligned and duplicated rows,
wrong types, outputs that alias inputs). Each example: the contract of docs/reliability.md
(tests/fuzz_helpers.py) and, on exit 0, the result against an independent truth."""
import json
import math
import os
import tempfile

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.fuzz_helpers import Contract, call, fuzz_settings, is_utf8, lines_st, split_lines, text_bytes

pytestmark = pytest.mark.fuzz


def spell(d: str, name: str, how: str) -> str:
    """Another spelling of ``d/name``: with ``.``, through ``sub/..``, a symlink or a hard link."""
    target = os.path.join(d, name)
    if how == "dot":
        return os.path.join(d, ".", name)
    if how == "dotdot":
        os.makedirs(os.path.join(d, "sub"), exist_ok=True)
        return os.path.join(d, "sub", "..", name)
    link = os.path.join(d, f"{how}-{name}")
    if not os.path.lexists(link):
        (os.symlink if how == "symlink" else os.link)(target, link)
    return link


ALIASES = st.sampled_from(["dot", "dotdot", "symlink", "hardlink"])


# ---------------------------------------------------------------- fairseq-kd-score


@pytest.mark.parametrize("out", ["none", "new", "ref", "hyp"])
@fuzz_settings(10)
@given(ref=text_bytes(), hyp=st.one_of(st.none(), text_bytes()), how=ALIASES)
def test_score(out, ref, hyp, how):
    import sacrebleu

    if hyp is None:
        hyp = ref  # identical files: BLEU 100 whenever there is a word
    with tempfile.TemporaryDirectory() as d:
        for name, data in (("ref.txt", ref), ("hyp.txt", hyp)):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        out_path = (None if out == "none" else os.path.join(d, "score.json") if out == "new"
                    else spell(d, f"{out}.txt", how))
        argv = ["-r", os.path.join(d, "ref.txt"), "-i", os.path.join(d, "hyp.txt")] + (["-o", out_path] if out_path
                                                                                           else [])
        with Contract("fairseq-kd-score", [os.path.join(d, "ref.txt"), os.path.join(d, "hyp.txt")],
                      [os.path.join(d, "score.json")]) as c:
            c.result = r = call("fairseq_kd.cli.score", argv)
        bad = (out in ("ref", "hyp") or not (is_utf8(ref) and is_utf8(hyp))
               or len(split_lines(ref)) != len(split_lines(hyp)))
        if bad:
            assert r.rc == 2, r.err
            return
        if r.rc == 0:
            got = json.loads(r.out)["bleu"]["score"]
            hyps, refs = split_lines(hyp), split_lines(ref)
            assert got == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 4)  # the tool's JSON keeps 4 decimals
            if out == "new":
                assert json.load(open(out_path))["bleu"]["score"] == got


# ---------------------------------------------------------------- fairseq-kd-noise


rate = st.one_of(st.just(0.0), st.floats(0, 1), st.sampled_from([-0.1, 1.5, math.nan, math.inf]))


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("out", ["new", "input", "target"])
@fuzz_settings(8)
@given(src=text_bytes(), tgt=text_bytes(), rates=st.tuples(rate, rate, rate), window=st.integers(-1, 4),
       how=ALIASES, seed=st.integers(0, 3))
def test_noise(parallel, out, src, tgt, rates, window, how, seed):
    """Stream mode (``tgt`` None) or parallel mode with the source side noised. With all rates 0 the output is
    the input's lines; otherwise the line count is kept and the other side copied verbatim."""
    tgt = tgt if parallel else None
    with tempfile.TemporaryDirectory() as d:
        ins = {"in.txt": src} if tgt is None else {"in.txt": src, "target.txt": tgt}
        for name, data in ins.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        o1 = os.path.join(d, "out.src") if out == "new" or tgt is None and out == "target" else \
            spell(d, "in.txt" if out == "input" else "target.txt", how)
        rates_argv = ["--deletion", str(rates[0]), "--substitution", str(rates[1]), "--swap", str(rates[2]),
                      "--swap-window", str(window), "--seed", str(seed), "--quiet"]
        if tgt is None:
            argv = rates_argv + ["-i", os.path.join(d, "in.txt"), "-o", o1]
            outputs = [os.path.join(d, "out.src")]
        else:
            o2 = os.path.join(d, "out.tgt")
            argv = rates_argv + ["--source", os.path.join(d, "in.txt"), "--target", os.path.join(d, "target.txt"),
                                 "--output-source", o1, "--output-target", o2]
            outputs = [os.path.join(d, "out.src"), o2]
        with Contract("fairseq-kd-noise", [os.path.join(d, n) for n in ins], outputs) as c:
            c.result = r = call("fairseq_kd.cli.noise", argv)
        bad_rates = any(not 0 <= x <= 1 for x in rates) or window < 1
        bad = (bad_rates or o1 != os.path.join(d, "out.src") or not all(is_utf8(b) for b in ins.values())
               or tgt is not None and len(split_lines(src)) != len(split_lines(tgt)))
        if bad:
            assert r.rc == 2, r.err
            return
        assert r.rc == 0, r.err
        noised = split_lines(open(o1, "rb").read())
        assert len(noised) == len(split_lines(src))
        if rates == (0.0, 0.0, 0.0):
            assert [x.lstrip("\ufeff") for x in noised] == [x.lstrip("\ufeff") for x in split_lines(src)]
        if tgt is not None:
            assert split_lines(open(outputs[1], "rb").read()) == split_lines(tgt)  # copied verbatim


# ---------------------------------------------------------------- fairseq-kd-report

HEADER = ["method", "noise", "arch", "decoding", "lr", "seed", "teacher", "search", "parameters", "bleu", "chrf",
          "signature", "updates", "stop", "cell"]
SIG = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"


def base_rows(scores):
    from fairseq_kd.study.config import Cell

    rows = []
    for i, (method, seed, bleu) in enumerate(scores):
        cell = Cell(method, 0.0, "tiny", "-", 0.001, seed).slug()
        rows.append([method, "0", "tiny", "-", "0.001", str(seed), "-", "beam5", "1000", f"{bleu:.2f}", "50",
                     SIG, "100", "budget", cell])
    return rows


GOOD = ["none", "copy", "bom", "crlf", "extra_column", "empty_optional"]
BAD = ["conflict", "nan", "negative", "over100", "nul", "latin1", "cut", "missing_column", "word", "signature",
       "huge", "seed_fraction", "edited_seed", "out_alias"]


@pytest.mark.parametrize("mutation", GOOD + BAD)
@fuzz_settings(4)
@given(scores=st.lists(st.tuples(st.sampled_from(["none", "word"]), st.integers(1, 3), st.floats(0, 100)),
                       min_size=1, max_size=6, unique_by=lambda t: t[:2]),
       pick=st.integers(0, 100))
def test_report(mutation, scores, pick):
    """A valid results.csv with one mutation. Accepted mutations (an exact copy, BOM, CRLF, an unknown column,
    empty optional cells) give the seed means of the unmutated rows; the others exit 2 and write nothing."""
    out_alias = mutation == "out_alias"
    rows = base_rows(scores)
    header = list(HEADER)
    i = pick % len(rows)
    if mutation == "copy":
        rows.insert(pick % (len(rows) + 1), list(rows[i]))
    elif mutation == "extra_column":
        header.append("lane")
        rows = [r + ["x"] for r in rows]
    elif mutation == "empty_optional":
        rows[i][header.index("stop")] = ""
        rows[i][header.index("signature")] = ""
    elif mutation == "conflict":
        dup = list(rows[i])
        dup[header.index("bleu")] = f"{(float(dup[header.index('bleu')]) + 1) % 100:.2f}"
        rows.append(dup)
    elif mutation in ("nan", "negative", "over100", "word", "huge"):
        rows[i][header.index("bleu")] = {"nan": "nan", "negative": "-0.5", "over100": "100.01", "word": "high",
                                         "huge": "1" * 140_000}[mutation]
    elif mutation == "signature":
        if len(rows) == 1:
            rows.append(base_rows([("none", 9, 1.0)])[0])
        rows[-1][header.index("signature")] = SIG.replace("13a", "intl")
    elif mutation == "seed_fraction":
        rows[i][header.index("seed")] += ".5"
    elif mutation == "edited_seed":
        rows.append(list(rows[i]))
        rows[-1][header.index("seed")] = "7"
    elif mutation == "missing_column":
        header.remove("bleu")
        rows = [r[:9] + r[10:] for r in rows]
    text = "\n".join(",".join(r) for r in [header] + rows) + "\n"
    if mutation == "crlf":
        text = text.replace("\n", "\r\n")
    if mutation == "cut":
        text = text[: text.rindex(",")] + "\n"
    data = (("\ufeff" if mutation == "bom" else "") + text).encode()
    if mutation == "nul":
        data = data.replace(b"tiny", b"ti\0ny", 1)
    if mutation == "latin1":
        data = data.replace(b"tiny", b"t\xefny", 1)
    with tempfile.TemporaryDirectory() as d:
        res = os.path.join(d, "summary.json" if out_alias else "results.csv")  # summary.json: an output's name
        with open(res, "wb") as f:
            f.write(data)
        out_dir = os.path.join(d, "out")
        outputs = [os.path.join(out_dir, n) for n in ("table.md", "summary.json")]
        argv = [res, "--no-plots", "--no-significance", "--format", "json"] + ([] if out_alias else
                                                                                ["--out-dir", out_dir])
        with Contract("fairseq-kd-report", [res], outputs + [os.path.join(d, "table.md")]) as c:
            c.result = r = call("fairseq_kd.cli.report", argv)
        if mutation in BAD:
            assert r.rc == 2, (mutation, r.err)
            return
        assert r.rc == 0, (mutation, r.err)
        expect = {}
        for method, seed, bleu in scores:
            expect.setdefault(method, []).append(round(bleu, 2))
        got = {s["method"]: (s["n"], s["bleu_mean"]) for s in json.loads(r.out)["summary"]}
        assert got == {m: (len(v), pytest.approx(sum(v) / len(v))) for m, v in expect.items()}
        assert json.load(open(outputs[1])) == json.loads(r.out)["summary"]  # valid JSON, what was printed


# ---------------------------------------------------------------- fairseq-kd-ladder


@fuzz_settings(25)
@given(vocab=st.one_of(st.integers(-5, 40_000).map(str), st.sampled_from(["", "1e4", "nan", "10k", " 12", "0x10"])),
       family=st.sampled_from(["all", "relu", "glu", "gelu"]))
def test_ladder(vocab, family):
    """On exit 0, each rung's parameter count grows by exactly d_model per extra symbol (one shared embedding
    matrix) against the 10,000-symbol table."""
    with Contract("fairseq-kd-ladder", []) as c:
        c.result = r = call("fairseq_kd.cli.ladder", ["--vocab-size", vocab, "--family", family, "--format", "json"])
    try:
        v = int(vocab)
    except ValueError:
        v = None
    if v is None or v < 5 or family == "gelu":
        assert r.rc == 2, r.err
        return
    assert r.rc == 0, r.err
    base = call("fairseq_kd.cli.ladder", ["--family", family, "--format", "json"])
    ref = {row["arch"]: row for row in json.loads(base.out)["rows"]}
    for row in json.loads(r.out)["rows"]:
        assert row["params"] - ref[row["arch"]]["params"] == (v - 10000) * row["embed_dim"]


@given(lines=lines_st)
@fuzz_settings(5)
def test_helpers_split_like_fileio(lines):
    """The fuzz tier's reading of a file is the project's (fileio.split_lines), so the oracles read alike."""
    from fairseq_kd import fileio

    data = "\n".join(lines).encode("utf-8", errors="surrogatepass")
    assume(is_utf8(data))
    assert split_lines(data) == fileio.split_lines(data.decode())


# ---------------------------------------------------------------- fairseq-kd-status

STATUS_SETTINGS = st.sampled_from([
    ("ok", b'{"patience": 8, "validate_interval_updates": 250, "max_update": 20000, "best_metric": "bleu"}'),
    ("ok", b'{"patience": null, "max_update": 300}'),  # a fixed-budget study
    ("bad", b'{"patience": "8"}'), ("bad", b'{"patience": -1}'), ("bad", b'{"max_update": 1.5}'),
    ("bad", b'[1, 2]'), ("bad", b'{"best_metric": "chrf"}'), ("bad", b'{"patience": 8'), ("bad", b'\xff\xfe'),
])
VALID = '2026-01-01 | INFO | valid | {"valid_loss": "3.9", "valid_bleu": "%s", "valid_num_updates": "%d"}\n'


@fuzz_settings(20)
@given(settings=STATUS_SETTINGS, noise=text_bytes(), bleus=st.lists(st.floats(0, 100), max_size=6),
       broken=st.booleans())
def test_status(settings, noise, bleus, broken):
    """A study out-dir whose train.log holds fairseq records among arbitrary bytes (or one record with a
    non-number): the cell's best validation is the records' maximum; bad study.json or a broken record exit 2."""
    kind, data = settings
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "study.json"), "wb") as f:
            f.write(data)
        cell = os.path.join(d, "cells", "c")
        os.makedirs(cell)
        records = "".join(VALID % (f"{b:.2f}", 250 * (i + 1)) for i, b in enumerate(bleus))
        if broken:
            records += VALID % ("high", 9999)
        with open(os.path.join(cell, "train.log"), "wb") as f:
            f.write(noise.replace(b"|", b"") + b"\n" + records.encode())
        with Contract("fairseq-kd-status", [d]) as c:
            c.result = r = call("fairseq_kd.cli.status", [d, "--json"])
    if kind == "bad" or broken:
        assert r.rc == 2, r.err
        return
    assert r.rc == 0, r.err
    row = json.loads(r.out)[d][0]
    expect = max((round(b, 2) for b in bleus), default=None)
    assert (row["best"] or [None, None])[1] == expect


FUZZED = {  # console tool -> its fuzz tests (module:function)
    "fairseq-kd-score": ["test_fuzz_text:test_score"],
    "fairseq-kd-noise": ["test_fuzz_text:test_noise"],
    "fairseq-kd-report": ["test_fuzz_text:test_report"],
    "fairseq-kd-status": ["test_fuzz_text:test_status"],
    "fairseq-kd-ladder": ["test_fuzz_text:test_ladder"],
    "fairseq-kd-cache": ["test_fuzz_models:test_broken_checkpoints", "test_fuzz_models:test_option_values",
                         "test_fuzz_models:test_outputs_aliasing_inputs"],
    "fairseq-kd-distill": ["test_fuzz_models:test_broken_checkpoints", "test_fuzz_models:test_option_values",
                           "test_fuzz_models:test_outputs_aliasing_inputs"],
    "fairseq-kd-prune": ["test_fuzz_models:test_broken_checkpoints", "test_fuzz_models:test_option_values"],
    "fairseq-kd-export": ["test_fuzz_models:test_broken_checkpoints", "test_fuzz_models:test_outputs_aliasing_inputs"],
    "fairseq-kd-study": ["test_fuzz_models:test_study_reference_text", "test_fuzz_models:test_outputs_aliasing_inputs"],
    "fairseq-kd-translate": ["test_fuzz_models:test_translate_input_text"],
}


def test_every_console_tool_is_fuzzed():
    """A tool added to setup.py without a fuzz test fails here."""
    import ast
    import importlib
    import re
    from pathlib import Path

    setup = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    tools = set(re.findall(r'"(fairseq-kd-[\w-]+) = [\w.]+:cli_main"', setup))
    assert tools and tools == set(FUZZED), sorted(tools ^ set(FUZZED))
    for tests in FUZZED.values():
        for name in tests:
            module, func = name.split(":")
            source = (Path(__file__).parent / f"{module}.py").read_text()
            assert func in {n.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)}, name
    assert importlib.import_module("tests.fuzz_helpers").Contract
