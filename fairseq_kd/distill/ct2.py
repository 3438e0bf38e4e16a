"""CTranslate2 backend for ``fairseq-kd-distill``: the same outputs, decoded faster.

The teacher is converted once with fairseq-kd's own converter (``fairseq_kd.export``: stock
``transformer`` and every ``transformer_glu`` configuration, ladder and GLU teachers
included) and cached next to the checkpoint in ``<ckpt dir>/ct2/<name>-<key[:16]>/``, keyed
by the checkpoint's fingerprint and the dictionaries it was loaded with
(``export.convert.conversion_key``: a retrained teacher, or the same checkpoint read with other
dictionaries, is re-converted, never served a conversion of other symbols). The cache
stores float32 weights; quantization happens at load time (``--ct2-compute-type auto``:
int8 on CPU, float16 on GPU).

Checkpoint safety: the teacher was loaded through fairseq-kd's allowlist
(``checkpoint_safety``); the converter reads the model already in memory, never the pickle.

Decoding (``export.decode``): length-sorted mixed-length batches through
``translate_iterable`` with a token-based ``max_batch_size``, fairseq's search rules and a
per-sentence length limit, so every output is the one the sentence gets alone.

Ensembles, teacher forcing, n-best sampling, sampling with ``--beam N > 1`` (fairseq keeps the
best-scoring of N samples; CTranslate2 draws one) and ``--temperature`` other than 1 outside
sampling (fairseq's beam/greedy search divides the logits by it; CTranslate2 applies a temperature
only when sampling) raise a ``KDInputError`` naming ``--backend fairseq`` (``check_options``,
before anything is written), as does any architecture the converter cannot express.
"""
import logging
import os
from typing import Dict, List

from fairseq_kd.errors import KDInputError

logger = logging.getLogger(__name__)


def cache_dir_for(checkpoint: str, fingerprint: str, src_dict, tgt_dict) -> str:
    """Where the converted model of ``checkpoint`` (read with ``src_dict`` / ``tgt_dict``) lives."""
    from fairseq_kd.export.convert import conversion_key

    name = os.path.splitext(os.path.basename(checkpoint))[0]
    key = conversion_key(fingerprint, src_dict, tgt_dict)
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "ct2", f"{name}-{key[:16]}")


def convert_teacher(teacher, checkpoint: str, fingerprint: str) -> str:
    """Export the loaded ``teacher`` (once; cached) and return the CTranslate2 model directory."""
    from fairseq_kd.export.convert import export_complete, export_model, publish

    out = cache_dir_for(checkpoint, fingerprint, teacher.src_dict, teacher.tgt_dict)
    if export_complete(out):  # every file at its recorded size: a conversion cut short is rebuilt
        return out
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        raise KDInputError("--backend ctranslate2 needs the ctranslate2 package (pip install ctranslate2), "
                           "or use --backend fairseq") from None
    os.makedirs(os.path.dirname(out), exist_ok=True)
    logger.info("ctranslate2: converting %s -> %s (once)", checkpoint, out)
    tmp = f"{out}.tmp.{os.getpid()}"
    try:
        export_model(teacher.models[0], teacher.src_dict, teacher.tgt_dict, tmp, force=True,
                     meta={"checkpoint": os.path.abspath(checkpoint), "fingerprint": fingerprint})
    except KDInputError as err:
        raise KDInputError(f"CTranslate2 cannot convert the teacher {checkpoint}: {err}. Use --backend fairseq "
                           f"(decodes any fairseq architecture).") from None
    publish(tmp, out)  # an incomplete or concurrent conversion is moved aside, then deleted
    return out


def convert(checkpoint: str, data_dir: str, src: str, tgt: str, fingerprint: str, trust: bool = False) -> str:
    """Load ``checkpoint`` (allowlist; ``trust`` for a trusted legacy file) and convert it (cached)."""
    from fairseq_kd.teacher import load_teacher

    del src, tgt  # the languages are the checkpoint's own
    from fairseq_kd.export.convert import check_architecture

    try:
        check_architecture(checkpoint, trust)
    except KDInputError as err:
        raise KDInputError(f"{err}. Use --backend fairseq (decodes any fairseq architecture).") from None
    teacher = load_teacher(checkpoint, teacher_data=data_dir, trust=trust)
    return convert_teacher(teacher, checkpoint, fingerprint)


def check_options(cfg) -> None:
    """What ``--backend ctranslate2`` cannot decode as fairseq does, refused before anything loads or is written."""
    from fairseq_kd.export.decode import MIN_LEN_WHY, min_len_reproduced
    from fairseq_kd.teacher import split_paths

    d = cfg.decoding
    if cfg.teacher_path and len(split_paths(cfg.teacher_path)) > 1:
        raise KDInputError("--backend ctranslate2 decodes a single teacher, not an ensemble: "
                           "use --backend fairseq for ensembles")
    if d.decoding == "teacher_forcing":
        raise KDInputError("--decoding teacher_forcing is implemented for --backend fairseq only (it is one forward "
                           "pass of the teacher, which CTranslate2 does not expose): use --backend fairseq")
    if d.decoding == "sampling" and d.nbest > 1:
        raise KDInputError("--backend ctranslate2 samples one hypothesis per sentence: use --nbest 1 "
                           "or --backend fairseq")
    if d.decoding == "sampling" and d.beam > 1:
        raise KDInputError(f"--decoding sampling --beam {d.beam}: --backend ctranslate2 draws one sample per sentence "
                           f"(fairseq keeps the best of {d.beam}): pass --beam 1, or --backend fairseq")
    if d.decoding == "beam" and not min_len_reproduced(d.min_len, d.beam):
        raise KDInputError(f"--min-len {d.min_len} with --beam {d.beam}: {MIN_LEN_WHY}: pass --min-len 1, "
                           f"--decoding greedy, or --backend fairseq")
    if d.decoding != "sampling" and d.temperature != 1.0:
        raise KDInputError(f"--temperature {d.temperature} with --decoding {d.decoding}: CTranslate2 applies a "
                           f"temperature only when sampling (fairseq's search divides every step's logits by it): "
                           f"pass --temperature 1, or --backend fairseq")


def resolve_compute_type(compute_type: str, device: str) -> str:
    if compute_type != "auto":
        return compute_type
    return "int8" if device == "cpu" else "float16"


class CT2Backend:
    """Decode a ``SplitData`` with a CTranslate2 Translator (interface of ``fairseq_backend.FairseqBackend``)."""

    name = "ctranslate2"

    def __init__(self, teacher, data, cfg):
        import ctranslate2
        import torch

        from fairseq_kd.export.decode import FairseqLikeDecoder, SearchConfig

        check_options(cfg)  # also checked by ``run.distill`` before anything is written
        if len(teacher.paths) != 1:
            raise KDInputError("--backend ctranslate2 decodes a single teacher, not an ensemble: "
                               "use --backend fairseq for ensembles")
        d = cfg.decoding
        self.data, self.cfg, self.ct2 = data, cfg, ctranslate2
        self.device = "cuda" if (torch.cuda.is_available() and not cfg.cpu) else "cpu"
        self.compute_type = resolve_compute_type(cfg.ct2_compute_type, self.device)
        model_dir = convert_teacher(teacher, teacher.paths[0], teacher.fingerprint())
        self.translator = ctranslate2.Translator(model_dir, device=self.device, compute_type=self.compute_type,
                                                 inter_threads=1, intra_threads=max(cfg.threads, 0))
        search = SearchConfig(beam=d.beam, nbest=d.nbest, lenpen=d.lenpen, max_len_a=d.max_len_a,
                              max_len_b=d.max_len_b, min_len=d.min_len,
                              max_positions=int(teacher.models[0].max_decoder_positions()),
                              sampling=d.decoding == "sampling", sampling_topk=d.sampling_topk,
                              sampling_topp=d.sampling_topp, temperature=d.temperature)
        self.decoder = FairseqLikeDecoder(self.translator, search, max_batch_tokens=cfg.max_tokens)
        logger.info("ctranslate2: %s on %s (%s)", model_dir, self.device, self.compute_type)

    def set_seed(self, seed: int) -> None:
        self.ct2.set_random_seed(seed)

    def decode(self, ids: List[int]) -> Dict[int, List[Dict]]:
        import torch

        from fairseq_kd.export.convert import source_tokens

        sd, td = self.data.src_dict, self.data.tgt_dict
        eos = td.eos()
        results = self.decoder.decode([source_tokens(sd, self.data.src_ds[i]) for i in ids])
        return {i: [{"tokens": torch.tensor([td.index(t) for t in toks] + [eos]), "score": score}
                    for toks, score in hyps] for i, hyps in zip(ids, results)}
