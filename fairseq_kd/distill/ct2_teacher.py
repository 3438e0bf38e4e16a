"""Any CTranslate2 translation model as the sequence-level KD teacher (``--teacher-ct2 DIR``).

An OPUS-MT / Marian, NLLB, M2M100 or fairseq model converted by CTranslate2's own converters
keeps its own tokenizer and vocabulary; the student keeps its own. For each sentence of the
split (the raw text of ``--source-text``, or ``--data``'s source decoded with the student's
``--spm-model``):

1. the teacher's source sentencepiece model cuts the text into pieces; the source tokens are
   ``[--teacher-source-prefix] + pieces + ["</s>"]``;
2. the sentence is translated alone, as ``translator.translate_batch([tokens], beam_size=B,
   num_hypotheses=nbest, length_penalty=lenpen (0, fairseq's unnormalized scores, is sent as
   ``export.decode.NO_LENGTH_PENALTY``: at exactly 0 CTranslate2 would stop a sentence's beam search when its
   best hypothesis ends), max_decoding_length=int(a * len(tokens) + b)
   (+1 with a target prefix), min_decoding_length=min_len, target_prefix=[[--teacher-target-prefix]],
   return_scores=True, max_input_length=0)`` returns it (sentences of one source length are
   batched together: no padding, the same result);
3. the target prefix is dropped, the teacher's target sentencepiece model detokenizes, the
   student's target sentencepiece model re-encodes and the student's target dictionary (from
   ``--data``, never the teacher's) binarizes the text; pieces it lacks become ``<unk>``
   (counted as ``unk_tokens`` in ``summary.json``).

The score kept per sentence is CTranslate2's: the log-probability divided by the length to the
power ``lenpen``. Refused with one line: a directory CTranslate2 cannot load, a tokenizer whose
pieces are not the model's vocabulary (another model's sentencepiece model), prefix tokens the
vocabulary lacks.
"""
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

import torch

from fairseq_kd.errors import KDInputError
from fairseq_kd.export.decode import NO_LENGTH_PENALTY

logger = logging.getLogger(__name__)

SOURCE_EOS = "</s>"
MIN_PIECES_IN_VOCAB = 0.9  # a teacher's own tokenizer covers its vocabulary (Marian, NLLB, M2M100: all pieces)
SPM_NAMES = (("source.spm", "target.spm"), ("sentencepiece.bpe.model",), ("spm.model",), ("sentencepiece.model",))


def model_files(model_dir: str) -> List[str]:
    """The files of a converted model directory (sorted), checked to hold ``model.bin``."""
    if not os.path.isdir(model_dir):
        raise KDInputError(f"--teacher-ct2 {model_dir}: not a directory (pass a model converted with "
                           f"ct2-transformers-converter / ct2-fairseq-converter)")
    if not os.path.isfile(os.path.join(model_dir, "model.bin")):
        raise KDInputError(f"--teacher-ct2 {model_dir} has no model.bin: convert the teacher with CTranslate2's "
                           f"converter first (e.g. ct2-transformers-converter --model M --output_dir {model_dir})")
    out = []
    for root, dirs, files in os.walk(model_dir):
        dirs.sort()
        out += [os.path.join(root, f) for f in sorted(files)]
    return out


def spm_paths(model_dir: str, teacher_spm: Sequence[str]) -> List[str]:
    """``[source model, target model]``: ``--teacher-spm`` (one model for both sides, or two), else
    the models next to the weights (``source.spm``/``target.spm`` of Marian, ``sentencepiece.bpe.model``)."""
    if len(teacher_spm) > 2:
        raise KDInputError(f"--teacher-spm takes one model (both sides) or two (source, target), got {len(teacher_spm)}")
    paths = list(teacher_spm)
    if not paths:
        for names in SPM_NAMES:
            if all(os.path.isfile(os.path.join(model_dir, n)) for n in names):
                paths = [os.path.join(model_dir, n) for n in names]
                break
    if not paths:
        raise KDInputError(f"no sentencepiece model in {model_dir} (source.spm/target.spm, sentencepiece.bpe.model): "
                           f"pass the teacher's own with --teacher-spm SRC_MODEL [TGT_MODEL]")
    for p in paths:
        if not os.path.isfile(p):
            raise KDInputError(f"--teacher-spm {p}: file not found")
    return paths * (2 // len(paths))


def fingerprint(cfg) -> str:
    """The teacher's content: every file of its directory, its tokenizer files and its prefixes."""
    from fairseq_kd import fingerprint as fp

    files = model_files(cfg.teacher_ct2)
    spms = spm_paths(cfg.teacher_ct2, cfg.teacher_spm)
    names = [os.path.relpath(f, cfg.teacher_ct2) for f in files]
    return fp.combine(["ct2-teacher", names, fp.files_fingerprint(files), fp.files_fingerprint(spms),
                       cfg.teacher_source_prefix, cfg.teacher_target_prefix])


def read_vocabulary(model_dir: str, side: str) -> List[str]:
    """The tokens of a converted model's ``side`` (source/target) vocabulary."""
    for name in (f"{side}_vocabulary", "shared_vocabulary"):
        for ext in (".json", ".txt"):
            path = os.path.join(model_dir, name + ext)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    return json.load(f) if ext == ".json" else f.read().split("\n")
    raise KDInputError(f"--teacher-ct2 {model_dir}: no {side}_vocabulary.json / shared_vocabulary.json: not a "
                       f"CTranslate2 translation model directory (re-convert it)")


def load_spm(path: str):
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_file=path)
    except Exception as err:  # noqa: BLE001 (sentencepiece raises OSError / RuntimeError)
        raise KDInputError(f"{path} is not a sentencepiece model ({err}): fix --teacher-spm / --spm-model") from None


def check_tokenizer(sp, path: str, vocab: Sequence[str], vocab_name: str) -> None:
    """Refuse a tokenizer whose pieces are not (mostly) the model's vocabulary."""
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())
              if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i))]
    known = set(vocab)
    missing = [p for p in pieces if p not in known]
    if pieces and len(missing) > (1 - MIN_PIECES_IN_VOCAB) * len(pieces):
        raise KDInputError(f"the tokenizer {path} does not match the teacher's {vocab_name}: {len(missing)} of its "
                           f"{len(pieces)} pieces are not in it (e.g. {missing[0]!r}); pass the teacher's own "
                           f"sentencepiece model(s) with --teacher-spm")
    if missing:
        logger.warning("%d of the %d pieces of %s are not in the teacher's %s", len(missing), len(pieces), path,
                       vocab_name)


def check_token(token: Optional[str], vocab: Sequence[str], flag: str, model_dir: str) -> None:
    if token and token not in set(vocab):
        raise KDInputError(f"{flag} {token!r} is not in the vocabulary of {model_dir}: pass one of the model's "
                           f"language tokens (e.g. deu_Latn for NLLB, __de__ for M2M100)")


def source_lines(cfg, data) -> List[str]:
    """The raw source text of the split: ``--source-text``, else ``--data``'s source decoded by ``--spm-model``."""
    from fairseq_kd import fileio
    from fairseq_kd.distill.data import Detokenizer, to_pieces

    if cfg.source_text:
        lines = fileio.read_lines(cfg.source_text, "--source-text")
        if len(lines) != len(data):
            raise KDInputError(f"--source-text {cfg.source_text} has {len(lines)} lines but split '{cfg.split}' of "
                               f"{cfg.data} has {len(data)} sentences: pass the raw text of that split")
        return lines
    detok = Detokenizer(cfg.spm_model)
    return [detok(to_pieces(data.src_dict, data.src_ds[i])) for i in range(len(data))]


def check_options(cfg) -> None:
    """What a CTranslate2 teacher cannot do, before anything loads."""
    d = cfg.decoding
    if not cfg.spm_model:
        raise KDInputError("--teacher-ct2 needs the student's --spm-model: the teacher's text is re-encoded with it")
    if cfg.teacher_path:
        raise KDInputError("--teacher and --teacher-ct2 exclude each other: pass one teacher")
    if d.decoding == "teacher_forcing":
        raise KDInputError("--decoding teacher_forcing needs the teacher's dictionary: use a fairseq --teacher")
    if d.decoding == "sampling" and d.nbest > 1:
        raise KDInputError("--teacher-ct2 samples one hypothesis per sentence: use --nbest 1")
    if d.decoding == "sampling" and d.beam > 1:
        raise KDInputError(f"--decoding sampling --beam {d.beam}: --teacher-ct2 draws one sample per sentence (the "
                           f"fairseq backend keeps the best of {d.beam}): pass --beam 1")
    if d.decoding != "sampling" and d.temperature != 1.0:
        raise KDInputError(f"--temperature {d.temperature} with --decoding {d.decoding}: CTranslate2 applies a "
                           f"temperature only when sampling: pass --temperature 1 (or a fairseq --teacher)")
    if cfg.teacher_data or cfg.trust_checkpoint or cfg.fp16 or cfg.bf16:
        raise KDInputError("--teacher-data, --trust-checkpoint, --fp16 and --bf16 are for a fairseq --teacher; a "
                           "CTranslate2 teacher's precision is --ct2-compute-type")


class CT2TeacherBackend:
    """``decode(ids) -> {id: [{"tokens": student target ids (EOS last), "score": float}, ...]}``."""

    name = "ct2-teacher"

    def __init__(self, data, cfg):
        import ctranslate2

        from fairseq_kd.distill.ct2 import resolve_compute_type

        check_options(cfg)
        self.data, self.cfg, self.ct2 = data, cfg, ctranslate2
        model_dir = cfg.teacher_ct2
        model_files(model_dir)
        src_spm, tgt_spm = spm_paths(model_dir, cfg.teacher_spm)
        self.src_sp, self.tgt_sp = load_spm(src_spm), load_spm(tgt_spm)
        src_vocab, tgt_vocab = read_vocabulary(model_dir, "source"), read_vocabulary(model_dir, "target")
        check_tokenizer(self.src_sp, src_spm, src_vocab, "source vocabulary")
        check_tokenizer(self.tgt_sp, tgt_spm, tgt_vocab, "target vocabulary")
        check_token(SOURCE_EOS, src_vocab, "the source end token", model_dir)
        check_token(cfg.teacher_source_prefix, src_vocab, "--teacher-source-prefix", model_dir)
        check_token(cfg.teacher_target_prefix, tgt_vocab, "--teacher-target-prefix", model_dir)
        self.student_sp = load_spm(cfg.spm_model_tgt or cfg.spm_model)
        self.device = "cuda" if (torch.cuda.is_available() and not cfg.cpu) else "cpu"
        self.compute_type = resolve_compute_type(cfg.ct2_compute_type, self.device)
        try:
            self.translator = ctranslate2.Translator(model_dir, device=self.device, compute_type=self.compute_type,
                                                     inter_threads=1, intra_threads=max(cfg.threads, 0))
        except Exception as err:  # noqa: BLE001 (CTranslate2 raises RuntimeError / ValueError)
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise KDInputError(f"CTranslate2 cannot load the teacher {model_dir} ({msg}): re-convert it with "
                               f"CTranslate2's converter for this ctranslate2 version") from None
        self.sources = source_lines(cfg, data)
        logger.info("ctranslate2 teacher: %s on %s (%s)", model_dir, self.device, self.compute_type)

    def set_seed(self, seed: int) -> None:
        self.ct2.set_random_seed(seed)

    def source_tokens(self, i: int) -> List[str]:
        pre = [self.cfg.teacher_source_prefix] if self.cfg.teacher_source_prefix else []
        return pre + self.src_sp.encode(self.sources[i], out_type=str) + [SOURCE_EOS]

    def options(self, n_source: int) -> Dict:
        d = self.cfg.decoding
        limit = int(d.max_len_a * n_source + d.max_len_b) + (1 if self.cfg.teacher_target_prefix else 0)
        opts = dict(max_decoding_length=max(limit, 1), min_decoding_length=d.min_len,
                    length_penalty=d.lenpen or NO_LENGTH_PENALTY,
                    return_scores=True, max_input_length=0)
        if d.decoding == "sampling":
            opts.update(beam_size=1, num_hypotheses=1, sampling_topk=max(d.sampling_topk, 0),
                        sampling_topp=d.sampling_topp if d.sampling_topp > 0 else 1.0, sampling_temperature=d.temperature)
        else:
            opts.update(beam_size=d.beam, num_hypotheses=d.nbest)
        return opts

    def student_ids(self, tokens: List[str]) -> torch.Tensor:
        """Teacher target tokens -> text -> the student's pieces -> the student's ids (EOS last)."""
        prefix = self.cfg.teacher_target_prefix
        if prefix and tokens and tokens[0] == prefix:
            tokens = tokens[1:]
        if tokens and tokens[-1] == SOURCE_EOS:
            tokens = tokens[:-1]
        text = self.tgt_sp.decode_pieces(tokens)
        pieces = " ".join(self.student_sp.encode(text, out_type=str))
        return self.data.tgt_dict.encode_line(pieces, add_if_not_exist=False, append_eos=True).long()

    def decode(self, ids: List[int]) -> Dict[int, List[Dict]]:
        sources = {i: self.source_tokens(i) for i in ids}
        by_len: Dict[int, List[int]] = {}
        for i in ids:
            by_len.setdefault(len(sources[i]), []).append(i)
        out = {}
        for n, group in sorted(by_len.items()):  # one source length per call: no padding
            step = max(1, min(self.cfg.batch_size, self.cfg.max_tokens // n))
            for lo in range(0, len(group), step):
                chunk = group[lo:lo + step]
                prefix = [[self.cfg.teacher_target_prefix]] * len(chunk) if self.cfg.teacher_target_prefix else None
                results = self.translator.translate_batch([sources[i] for i in chunk], target_prefix=prefix,
                                                          **self.options(n))
                for i, res in zip(chunk, results):
                    out[i] = [{"tokens": self.student_ids(list(h)), "score": float(s)}
                              for h, s in zip(res.hypotheses, res.scores)]
        return out
