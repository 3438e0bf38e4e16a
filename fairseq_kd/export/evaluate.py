"""BLEU and speed of a checkpoint's CTranslate2 export on a binarized test split.

``evaluate_export(CKPT, DATA_BIN, REF)`` exports the checkpoint (cached beside it, keyed by
its bytes, its dictionaries, the sentencepiece model and the quantization), decodes the split's source with fairseq's search rules
(``export.decode``), detokenizes with the export's sentencepiece model (found beside the data
dir, or ``spm_model``; without one the symbols are joined by spaces) and scores against the
raw reference with ``fairseq_kd.scoring``. The main job's table calls it for every
student (int8 BLEU and sentences/s); ``bench/bench_export.py`` for every row it times.
"""
import os
import time
from typing import Dict, List, Optional



def export_dir_for(checkpoint: str, quantization: str, src_dict, tgt_dict, spm_model: Optional[str]) -> str:
    """Where the ``quantization`` export of ``checkpoint`` read with these dictionaries and sentencepiece
    model lives (``export.convert.conversion_key``: another checkpoint, dictionary or sentencepiece model
    is another directory)."""
    from fairseq_kd.export.convert import conversion_key
    from fairseq_kd.fingerprint import file_sha256

    name = os.path.splitext(os.path.basename(checkpoint))[0]
    key = conversion_key(file_sha256(checkpoint), src_dict, tgt_dict,
                         file_sha256(spm_model) if spm_model else None, quantization)
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "ct2", f"{name}-{key[:16]}-{quantization}")


def ensure_export(checkpoint: str, quantization: str = "int8", data: Optional[str] = None,
                  spm_model: Optional[str] = None, trust: bool = False) -> str:
    """The export directory of ``checkpoint`` (written once; reused while the checkpoint, its dictionaries
    and sentencepiece model are unchanged and the directory is complete: ``export_complete``)."""
    from fairseq_kd import guard
    from fairseq_kd.export.convert import export_complete, export_model, load_for_export

    model, src_dict, tgt_dict, cfg, spm_model, meta = load_for_export(checkpoint, data, spm_model, trust)
    out = export_dir_for(checkpoint, quantization, src_dict, tgt_dict, spm_model)
    if not export_complete(out):  # absent, or cut short (a full disk, a kill): written again
        guard.check_paths(guard.named_by_checkpoint(cfg), {"OUT_DIR": out})
        os.makedirs(os.path.dirname(out), exist_ok=True)
        export_model(model, src_dict, tgt_dict, out, quantization, spm_model, meta=meta, force=True)
    return out


def split_sources(data_bin: str, split: str, src: Optional[str] = None, tgt: Optional[str] = None) -> List[List[str]]:
    """The split's source sentences as dictionary symbols (EOS dropped), in id order."""
    from fairseq_kd.distill.data import SplitData, infer_langs
    from fairseq_kd.export.convert import source_tokens

    src, tgt = infer_langs(data_bin, split, src, tgt)
    data = SplitData(data_bin, split, src, tgt)
    return [source_tokens(data.src_dict, data.src_ds[i]) for i in range(len(data))]


def translate_timed(model_dir: str, sources: List[List[str]], beam: int = 5, compute_type: str = "default",
                    threads: int = 1, max_tokens: int = 4000, max_len_a: float = 1.2, max_len_b: int = 10,
                    lenpen: float = 1.0, min_len: int = 1):
    """``(hypothesis pieces per sentence, decoding seconds)`` (model loading not timed); the search flags are
    fairseq-generate's (``export.decode.SearchConfig``)."""
    import ctranslate2

    from fairseq_kd.export.convert import read_meta
    from fairseq_kd.export.decode import FairseqLikeDecoder, SearchConfig

    translator = ctranslate2.Translator(model_dir, device="cpu", compute_type=compute_type, inter_threads=1,
                                        intra_threads=max(threads, 0))
    cfg = SearchConfig(beam=beam, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len,
                       max_positions=int(read_meta(model_dir).get("max_target_positions", 1024)))
    decoder = FairseqLikeDecoder(translator, cfg, max_batch_tokens=max_tokens)
    t0 = time.perf_counter()
    hyps = decoder.decode(sources)
    return [h[0][0] for h in hyps], time.perf_counter() - t0


def evaluate_export(checkpoint: str, data_bin: str, ref_file: str, split: str = "test", beam: int = 5,
                    quantization: str = "int8", threads: int = 1, max_tokens: int = 4000,
                    spm_model: Optional[str] = None, hyp_file: Optional[str] = None,
                    max_len_a: float = 1.2, max_len_b: int = 10, lenpen: float = 1.0, min_len: int = 1) -> Dict:
    """Export ``checkpoint`` (``quantization``), translate ``split`` of ``data_bin``, score against ``ref_file``.

    Decoded with fairseq-generate's ``--beam``, ``--lenpen``, ``--min-len``, ``--max-len-a/-b``.
    Returns ``{"bleu", "chrf", "sent_per_s", "seconds", "sentences", "quantization", "beam", "lenpen",
    "min_len", "export_dir", "bleu_signature"}``; ``hyp_file`` also receives the detokenized hypotheses.
    """
    import sentencepiece as spm

    from fairseq_kd import fileio, scoring
    from fairseq_kd.export.convert import read_meta

    model_dir = ensure_export(checkpoint, quantization, data=data_bin, spm_model=spm_model)
    spm_name = (read_meta(model_dir).get("spm") or {}).get("target")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, spm_name)) if spm_name else None
    sources = split_sources(data_bin, split)
    pieces, seconds = translate_timed(model_dir, sources, beam=beam, threads=threads, max_tokens=max_tokens,
                                      max_len_a=max_len_a, max_len_b=max_len_b, lenpen=lenpen, min_len=min_len)
    hyps = [sp.decode(p) if sp is not None else " ".join(p) for p in pieces]  # no model: the symbols as they are
    refs = scoring.read_lines(ref_file)
    scoring.check_aligned(hyps, [refs], f"{split} of {data_bin}", [ref_file])
    if hyp_file:
        fileio.atomic_write_lines(hyp_file, hyps)
    score = scoring.score_lines(hyps, [refs], scoring.ScoreConfig(metrics=("bleu", "chrf")))
    return {"bleu": round(score["bleu"]["score"], 2), "chrf": round(score["chrf"]["score"], 2),
            "sent_per_s": round(len(hyps) / seconds, 2) if seconds > 0 else None, "seconds": round(seconds, 3),
            "sentences": len(hyps), "quantization": quantization, "beam": beam, "lenpen": lenpen,
            "min_len": min_len, "export_dir": model_dir,
            "bleu_signature": score["bleu"]["signature"]}


def search_beam(search: str) -> Optional[int]:
    """The beam of a ``results.csv`` search (``beam5`` -> 5, ``greedy`` -> 1; None for anything else)."""
    if search == "greedy":
        return 1
    if search.startswith("beam") and search[4:].isdigit():
        return int(search[4:])
    return None


def study_decoding(study_dir: str, beam: Optional[int] = None, rows: Optional[List[Dict]] = None) -> Dict:
    """How ``fairseq-kd-study`` decoded the rows of ``study_dir``, as ``evaluate_export`` keywords (``split``,
    ``beam``, ``max_len_a``, ``max_len_b``, ``lenpen``, ``min_len``, ``spm_model``), read off ``study.json``
    (defaults without one: ``test``, beam 5, 1.2x+10, the sentencepiece model beside the data).

    ``beam``: None = the study's (``study.json``); another beam than the study's or one of its rows' searches
    (``results.csv``: ``beam5``, ``greedy``) is refused, as is a flag of ``study.json``'s ``gen_args`` that
    CTranslate2 decodes otherwise than fairseq-generate (``export.decode.search_flags``): the table puts int8
    numbers beside the study's rows, and a number decoded otherwise has no row to stand beside. Raised
    before any export or decoding."""
    from fairseq_kd import integrity
    from fairseq_kd.errors import KDInputError
    from fairseq_kd.export.decode import search_flags

    path = os.path.join(study_dir, "study.json")
    settings = integrity.load_json(path, "rerun the study") if os.path.isfile(path) else {}
    recorded = settings.get("beam")
    if recorded is not None and (not isinstance(recorded, int) or isinstance(recorded, bool) or recorded < 1):
        raise KDInputError(f"{path}: beam {recorded!r} is not a positive integer; rerun the study")
    searches = sorted({r.get("search") or "" for r in rows or []} - {""})
    allowed = {b for b in map(search_beam, searches) if b} | ({recorded} if recorded else set())
    if beam is None:
        beam = recorded or (max(allowed) if allowed else 5)
    elif allowed and beam not in allowed:
        said = [f"{path}: beam {recorded}"] if recorded else []
        said += [f"results.csv: {', '.join(searches)}"] if searches else []
        raise KDInputError(f"beam {beam}: the study decoded its rows otherwise ({'; '.join(said)}) and the int8 "
                           f"table decodes as the study did: leave the beam out or pass "
                           f"{' or '.join(map(str, sorted(allowed)))} (evaluate_export decodes an export at any beam)")
    if beam < 1:
        raise KDInputError(f"beam {beam}: pass a positive beam")
    spm_model = settings.get("spm_model")
    decoding = dict(split=settings.get("gen_subset") or "test", beam=beam,
                    max_len_a=float(settings.get("max_len_a", 1.2)), max_len_b=int(settings.get("max_len_b", 10)),
                    lenpen=1.0, min_len=1, spm_model=spm_model if spm_model and os.path.isfile(spm_model) else None)
    decoding.update(search_flags(settings.get("gen_args") or "", beam, f"{path} gen_args"))
    return decoding


def study_int8_table(study_dir: str, data_bin: str, test_ref: str, beam: Optional[int] = None,
                     threads: int = 1) -> str:
    """Markdown rows: each student of a ``fairseq-kd-study`` run (``results.csv``), its int8 export's BLEU
    and sentences/s on the split the study tested (the main job appends this to its final table).

    Decoded as the study decoded its rows (``study_decoding``): its ``gen_subset``, beam, length limit
    (``max_len_a/b``), the ``--lenpen`` / ``--min-len`` of its ``gen_args`` and its sentencepiece model from
    ``study.json``; a beam or a ``gen_args`` flag CTranslate2 cannot decode as the study did is refused
    before any export. A student whose checkpoint is gone gets a row saying so, not no row."""
    from fairseq_kd.study.records import read_csv  # checked by fairseq_kd.integrity (file:line on bad rows)

    from fairseq_kd import integrity

    rows = read_csv(os.path.join(study_dir, "results.csv"))
    path = os.path.join(study_dir, "study.json")
    settings = integrity.load_json(path, "rerun the study") if os.path.isfile(path) else {}
    decoded = "checkpoint_best.pt" if settings.get("patience") else "checkpoint_last.pt"  # what the study decoded
    decoding = study_decoding(study_dir, beam, rows)
    label = f"beam {decoding['beam']}"
    label += f", lenpen {decoding['lenpen']:g}" if decoding["lenpen"] != 1 else ""
    label += f", min-len {decoding['min_len']}" if decoding["min_len"] != 1 else ""
    lines = [f"| student (cell) | method | params | int8 export BLEU ({label}) | int8 sent/s ({threads} thread) |",
             "|---|---|---|---|---|"]
    done = set()
    for row in rows:
        if row["cell"] in done:
            continue
        done.add(row["cell"])
        ckpt = os.path.join(study_dir, "cells", row["cell"], "checkpoints", decoded)
        head = f"| {row['cell']} | {row.get('method', '')} | {row.get('parameters', '')} |"
        if not os.path.isfile(ckpt):
            lines.append(f"{head} n/a (no {decoded}) | n/a |")
            continue
        r = evaluate_export(ckpt, data_bin, test_ref, quantization="int8", threads=threads, **decoding)
        lines.append(f"{head} {r['bleu']:.2f} | {r['sent_per_s']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m fairseq_kd.export.evaluate STUDY_DIR DATA_BIN TEST_REF [BEAM] [THREADS]
    import sys

    import fairseq_kd  # noqa: F401  (allowlist, architectures; a KDInputError is one line on stderr, exit 2)

    args = sys.argv[1:]
    print(study_int8_table(args[0], args[1], args[2], *(int(x) for x in args[3:5])))
