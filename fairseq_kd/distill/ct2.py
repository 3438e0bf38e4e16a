"""CTranslate2 backend for ``fairseq-kd-distill``: the same outputs, decoded much faster.

The teacher is converted once with CTranslate2's own fairseq converter and cached next
to the checkpoint in ``<ckpt dir>/ct2/<name>-<sha256[:16]>/`` (keyed by the checkpoint's
fingerprint, so a retrained teacher is re-converted). The cache stores float32 weights;
quantization happens at load time (``--ct2-compute-type auto``: int8 on CPU, float16 on
GPU).

Checkpoint safety: the checkpoint is first loaded through fairseq-kd's allowlist
(``checkpoint_safety.load_checkpoint``), so a pickle holding anything but fairseq's own
types is refused before the converter touches it. The converter then reads the file
in this process, where that allowlist is installed, so it runs with
``weights_only=True`` too. Only with ``--trust-checkpoint`` (a trusted legacy file
the allowlist refuses) is the converter's ``unsafe_deserialization`` (full unpickling)
used.

Architectures CTranslate2 cannot convert (fairseq-kd's own, e.g. GLU students) and
ensembles raise a ``KDInputError`` naming ``--backend fairseq``.
"""
import logging
import os
import shutil
from typing import Dict, List

from fairseq_kd.errors import KDInputError

logger = logging.getLogger(__name__)

USER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cache_dir_for(checkpoint: str, fingerprint: str) -> str:
    """Where the converted model of ``checkpoint`` lives."""
    name = os.path.splitext(os.path.basename(checkpoint))[0]
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "ct2", f"{name}-{fingerprint[:16]}")


def convert(checkpoint: str, data_dir: str, src: str, tgt: str, fingerprint: str, trust: bool = False) -> str:
    """Convert ``checkpoint`` (once; cached) and return the CTranslate2 model directory."""
    out = cache_dir_for(checkpoint, fingerprint)
    if os.path.isfile(os.path.join(out, "model.bin")):
        return out
    try:
        import ctranslate2  # noqa: F401
        from ctranslate2.converters.fairseq import FairseqConverter
    except ImportError:
        raise KDInputError("--backend ctranslate2 needs the ctranslate2 package (pip install ctranslate2), "
                           "or use --backend fairseq") from None
    from fairseq_kd import checkpoint_safety

    checkpoint_safety.load_checkpoint(checkpoint, trust_file=trust)  # refuses non-fairseq pickles first
    tmp = f"{out}.tmp.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    converter = FairseqConverter(checkpoint, data_dir, source_lang=src, target_lang=tgt, user_dir=USER_DIR,
                                 unsafe_deserialization=trust)
    logger.info("ctranslate2: converting %s -> %s (once)", checkpoint, out)
    try:
        converter.convert(tmp, quantization=None, force=True)
    except (ValueError, NotImplementedError, KeyError, AttributeError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise KDInputError(
            f"CTranslate2 cannot convert the teacher {checkpoint}: {str(err).strip()}. "
            f"Use --backend fairseq (decodes any fairseq architecture, including fairseq-kd's own).") from None
    try:
        os.replace(tmp, out)
    except OSError:  # another process published it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


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

        if len(teacher.paths) != 1:
            raise KDInputError("--backend ctranslate2 decodes a single teacher, not an ensemble: "
                               "use --backend fairseq for ensembles")
        d = cfg.decoding
        if d.decoding == "teacher_forcing":
            raise KDInputError("--decoding teacher_forcing is implemented for --backend fairseq only")
        if d.decoding == "sampling" and d.nbest > 1:
            raise KDInputError("--backend ctranslate2 samples one hypothesis per sentence: use --nbest 1 "
                               "or --backend fairseq")
        self.data, self.cfg, self.ct2 = data, cfg, ctranslate2
        self.device = "cuda" if (torch.cuda.is_available() and not cfg.cpu) else "cpu"
        self.compute_type = resolve_compute_type(cfg.ct2_compute_type, self.device)
        model_dir = convert(teacher.paths[0], cfg.teacher_data or cfg.data, data.src, data.tgt,
                            teacher.fingerprint(), trust=cfg.trust_checkpoint)
        self.translator = ctranslate2.Translator(model_dir, device=self.device, compute_type=self.compute_type,
                                                 inter_threads=1, intra_threads=max(cfg.threads, 0))
        logger.info("ctranslate2: %s on %s (%s)", model_dir, self.device, self.compute_type)

    def set_seed(self, seed: int) -> None:
        self.ct2.set_random_seed(seed)

    def _options(self, max_src_len: int) -> Dict:
        d = self.cfg.decoding
        opts = dict(max_decoding_length=int(d.max_len_a * max_src_len + d.max_len_b),
                    min_decoding_length=d.min_len, return_scores=True, max_input_length=0)
        if d.decoding == "sampling":
            opts.update(beam_size=1, num_hypotheses=1, sampling_topk=d.sampling_topk if d.sampling_topk > 0 else 0,
                        sampling_topp=d.sampling_topp if d.sampling_topp > 0 else 1.0,
                        sampling_temperature=d.temperature)
        else:
            opts.update(beam_size=d.beam, num_hypotheses=d.nbest, length_penalty=d.lenpen)
        return opts

    def decode(self, ids: List[int]) -> Dict[int, List[Dict]]:
        import torch

        sd, td = self.data.src_dict, self.data.tgt_dict
        eos = td.eos()
        source = [[sd[t] for t in self.data.src_ds[i].tolist() if t != sd.eos()] for i in ids]  # EOS added by ct2
        max_src_len = max(int(self.data.src_ds.sizes[i]) for i in ids)  # incl. EOS, as fairseq's max_len_a/b
        results = self.translator.translate_batch(source, **self._options(max_src_len))
        out = {}
        for i, res in zip(ids, results):
            hyps = []
            for toks, score in zip(res.hypotheses, res.scores):
                hyps.append({"tokens": torch.tensor([td.index(t) for t in toks] + [eos]), "score": float(score)})
            out[i] = hyps
        return out
