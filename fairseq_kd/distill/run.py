"""Distil a binarized split: the teacher translates every source line; the outputs
become a plain-text and a binarized parallel corpus (line i = source line i).

Work is done in shards (``shards.ShardStore``) so an interrupted run resumes; the
final files are written only after the alignment of every shard has been checked.
"""
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch

from fairseq_kd.distill import decoding as dec
from fairseq_kd.distill import select as sel
from fairseq_kd.distill.shards import ShardStore, atomic_write_lines, atomic_write_text, shard_ranges
from fairseq_kd.errors import KDInputError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class DistillConfig:
    """Everything ``fairseq-kd-distill`` needs (the CLI fills it from its flags)."""
    data: str  # binarized data dir (fairseq-preprocess output, the teacher's dictionaries)
    teacher_path: str  # checkpoint, or several joined by ':' (ensemble)
    output_dir: str
    split: str = "train"
    source_lang: Optional[str] = None
    target_lang: Optional[str] = None
    teacher_data: Optional[str] = None  # where the teacher's dict.*.txt live, if not ``data``
    decoding: dec.DecodingConfig = field(default_factory=dec.DecodingConfig)
    select: str = "top"
    backend: str = "fairseq"  # fairseq | ctranslate2
    ct2_compute_type: str = "auto"
    max_tokens: int = 6000
    batch_size: int = 256
    shard_size: int = 2000
    seed: int = 1
    spm_model: Optional[str] = None  # sentencepiece model for detokenized text and BLEU
    spm_model_tgt: Optional[str] = None  # target-side model when the sides have separate ones
    threads: int = 0  # torch / CTranslate2 CPU threads; 0 = library default
    cpu: bool = False
    fp16: bool = False
    copy_splits: List[str] = field(default_factory=list)
    trust_checkpoint: bool = False
    overwrite: bool = False
    progress: bool = True


# --- data --------------------------------------------------------------------------
def infer_langs(data: str, split: str, src: Optional[str], tgt: Optional[str]):
    """Language pair from ``{split}.{src}-{tgt}.{src}.idx`` when not given."""
    if src and tgt:
        return src, tgt
    for fname in sorted(os.listdir(data)):
        parts = fname.split(".")
        if fname.startswith(split + ".") and fname.endswith(".idx") and len(parts) == 4 and "-" in parts[1]:
            a, b = parts[1].split("-", 1)
            if parts[2] == a:
                return src or a, tgt or b
    raise KDInputError(f"no binarized split '{split}' in {data} (expected {split}.SRC-TGT.SRC.idx): run "
                       f"fairseq-preprocess with the teacher's dictionaries, or pass --source-lang/--target-lang")


def split_prefix(data: str, split: str, src: str, tgt: str, lang: str) -> Optional[str]:
    from fairseq.data import indexed_dataset

    for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
        prefix = os.path.join(data, f"{split}.{pair}.{lang}")
        if indexed_dataset.dataset_exists(prefix, impl="mmap"):
            return prefix
    return None


class SplitData:
    """The binarized split (source, optional gold target) and its dictionaries."""

    def __init__(self, data: str, split: str, src: str, tgt: str):
        from fairseq.data import Dictionary, LanguagePairDataset, data_utils

        self.data, self.split, self.src, self.tgt = data, split, src, tgt
        self.src_dict_file = os.path.join(data, f"dict.{src}.txt")
        self.tgt_dict_file = os.path.join(data, f"dict.{tgt}.txt")
        for f in (self.src_dict_file, self.tgt_dict_file):
            if not os.path.isfile(f):
                raise KDInputError(f"dictionary {f} not found: --data must be a fairseq-preprocess output dir")
        self.src_dict, self.tgt_dict = Dictionary.load(self.src_dict_file), Dictionary.load(self.tgt_dict_file)
        self.src_prefix = split_prefix(data, split, src, tgt, src)
        if self.src_prefix is None:
            raise KDInputError(f"no binarized source for split '{split}' ({src}-{tgt}) in {data}: "
                               f"check --data/--split/--source-lang")
        self.tgt_prefix = split_prefix(data, split, src, tgt, tgt)
        self.src_ds = data_utils.load_indexed_dataset(self.src_prefix, self.src_dict, "mmap")
        self.tgt_ds = data_utils.load_indexed_dataset(self.tgt_prefix, self.tgt_dict, "mmap") if self.tgt_prefix else None
        if self.tgt_ds is not None and len(self.tgt_ds) != len(self.src_ds):
            raise KDInputError(f"{self.src_prefix} has {len(self.src_ds)} sentences but {self.tgt_prefix} has "
                               f"{len(self.tgt_ds)}: re-binarize the split")
        self.pairs = LanguagePairDataset(
            self.src_ds, self.src_ds.sizes, self.src_dict, self.tgt_ds,
            None if self.tgt_ds is None else self.tgt_ds.sizes, self.tgt_dict, left_pad_source=True,
            left_pad_target=False, shuffle=False)

    def __len__(self):
        return len(self.src_ds)

    def fingerprint(self) -> str:
        from fairseq_kd.teacher import file_sha256

        files = [self.src_prefix + ".bin", self.src_prefix + ".idx"]
        if self.tgt_prefix:
            files += [self.tgt_prefix + ".bin", self.tgt_prefix + ".idx"]
        return ":".join(file_sha256(f)[:16] for f in files)

    def gold(self, i: int) -> Optional[torch.Tensor]:
        return None if self.tgt_ds is None else self.tgt_ds[i]

    def batches(self, ids: range, max_tokens: int, batch_size: int, same_length: bool = True) -> List[List[int]]:
        """Length-sorted batches of ``ids`` (padded size <= ``max_tokens``), as fairseq-generate makes them.

        ``same_length``: each batch holds a single source length. fairseq's max length
        (a * src_len + b) is taken over a batch, so equal-length batches make every output
        independent of its batch mates; the fairseq backend does not need this (its search
        gives every sentence its own limit, ``decoding.SentenceMaxLen``), CTranslate2 does.
        """
        ids = np.asarray(list(ids))
        order = ids[np.lexsort((ids, self.src_ds.sizes[ids]))]  # by source length, then id
        batches, cur, longest = [], [], 0
        for i in order.tolist():
            n = int(self.src_ds.sizes[i])  # the longest so far: ids are sorted by length
            if cur and ((same_length and n != longest) or len(cur) + 1 > batch_size or n * (len(cur) + 1) > max_tokens):
                batches.append(cur)
                cur = []
            cur.append(i)
            longest = n
        if cur:
            batches.append(cur)
        return batches


# --- backends ----------------------------------------------------------------------
class FairseqBackend:
    """Decode with fairseq's SequenceGenerator on the teacher (ensemble)."""

    name = "fairseq"

    def __init__(self, teacher, data: SplitData, cfg: DistillConfig):
        self.data, self.cfg = data, cfg
        use_cuda = torch.cuda.is_available() and not cfg.cpu
        self.device = torch.device("cuda" if use_cuda else "cpu")
        teacher.to(self.device)
        if cfg.fp16 and use_cuda:
            teacher.half()
        self.decoder = dec.TeacherDecoder(teacher.models, data.tgt_dict, cfg.decoding)

    def decode(self, ids: List[int]) -> Dict[int, List[Dict]]:
        from fairseq import utils

        sample = self.data.pairs.collater([self.data.pairs[i] for i in ids])
        sample = utils.move_to_cuda(sample, device=self.device) if self.device.type == "cuda" else sample
        hyps = self.decoder(sample)
        return {int(i): h for i, h in zip(sample["id"].tolist(), hyps)}


def same_length_batches(backend: str) -> bool:
    """CTranslate2 has one max length per batch, so it gets batches of one source length; the
    fairseq backend's search gives every sentence its own limit (``decoding.SentenceMaxLen``)."""
    return backend != "fairseq"


def build_backend(teacher, data: SplitData, cfg: DistillConfig):
    if cfg.backend == "fairseq":
        return FairseqBackend(teacher, data, cfg)
    if cfg.backend == "ctranslate2":
        from fairseq_kd.distill.ct2 import CT2Backend

        return CT2Backend(teacher, data, cfg)
    raise KDInputError(f"unknown --backend {cfg.backend!r} (fairseq or ctranslate2)")


# --- text --------------------------------------------------------------------------
class Detokenizer:
    """Pieces -> text with sentencepiece (identity without a model)."""

    def __init__(self, model: Optional[str]):
        self.sp = None
        if model:
            import sentencepiece as spm

            if not os.path.isfile(model):
                raise KDInputError(f"sentencepiece model not found: {model} (fix --spm-model)")
            self.sp = spm.SentencePieceProcessor(model_file=model)

    def __call__(self, pieces: str) -> str:
        return pieces if self.sp is None else self.sp.decode(pieces.split())


def to_pieces(dictionary, tokens) -> str:
    """Ids (EOS/pad stripped) -> space-joined dictionary symbols."""
    return dictionary.string(torch.as_tensor(tokens))


# --- the job -----------------------------------------------------------------------
def decode_shard(backend, data: SplitData, ids: range, cfg: DistillConfig, detok_tgt: Detokenizer,
                 progress=None) -> Dict[int, Dict]:
    """Records ``{id: {"tgt": ids, "fallback": ..., "rank": ..., "score": ...}}`` for one shard."""
    eos = data.tgt_dict.eos()
    records = {}
    for batch in data.batches(ids, cfg.max_tokens, cfg.batch_size, same_length=same_length_batches(cfg.backend)):
        try:
            hyps = backend.decode(batch)
        except (RuntimeError, ValueError) as err:  # e.g. out of memory: retry one by one
            logger.warning("batch of %d failed (%s): decoding its sentences one by one", len(batch), err)
            hyps = {}
            for i in batch:
                try:
                    hyps.update(backend.decode([i]))
                except (RuntimeError, ValueError) as err1:
                    logger.warning("sentence %d failed: %s", i, err1)
        for i in batch:
            records[i] = choose(hyps.get(i) or [], data.gold(i), cfg.select, data.tgt_dict, detok_tgt, eos)
        if progress is not None:
            progress.update(len(batch))
    return records


def choose(hyps: List[Dict], gold: Optional[torch.Tensor], select: str, tgt_dict, detok, eos: int) -> Dict:
    """Pick a hypothesis (seq-inter when ``select`` != top); fall back to gold when empty/failed."""
    rank = 0
    if len(hyps) > 1 and select != "top" and gold is not None:
        texts = [detok(to_pieces(tgt_dict, h["tokens"])) for h in hyps]
        rank = sel.select_index(texts, detok(to_pieces(tgt_dict, gold)), select)
    fallback = None
    if not hyps:
        fallback = "failed"
    elif dec.is_empty(hyps[rank]["tokens"], eos):
        fallback = "empty"
    if fallback is not None:
        if gold is None:
            return {"tgt": [eos], "fallback": fallback, "rank": -1, "score": None}
        return {"tgt": gold.tolist(), "fallback": fallback, "rank": -1, "score": None}
    h = hyps[rank]
    return {"tgt": h["tokens"].tolist(), "fallback": None, "rank": rank, "score": round(h["score"], 6)}


def meta_of(cfg: DistillConfig, data: SplitData, teacher_fp: str) -> Dict:
    """What the outputs depend on (resuming with other values is refused)."""
    return {
        "format": FORMAT_VERSION, "teacher": teacher_fp, "data": data.fingerprint(), "split": cfg.split,
        "langs": f"{data.src}-{data.tgt}", "decoding": cfg.decoding.signature(), "select": cfg.select,
        "backend": cfg.backend + (f":{cfg.ct2_compute_type}" if cfg.backend == "ctranslate2" else ""),
        "shard_size": cfg.shard_size, "max_tokens": cfg.max_tokens, "batch_size": cfg.batch_size, "seed": cfg.seed,
        "batching": "same_length" if same_length_batches(cfg.backend) else "mixed",
    }


def distill(cfg: DistillConfig) -> Dict:
    """Run (or resume) the distillation and publish the outputs; returns the summary."""
    from fairseq_kd.teacher import check_same_dictionary, load_teacher

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    src, tgt = infer_langs(cfg.data, cfg.split, cfg.source_lang, cfg.target_lang)
    data = SplitData(cfg.data, cfg.split, src, tgt)
    if cfg.decoding.decoding == "teacher_forcing" and data.tgt_ds is None:
        raise KDInputError(f"--decoding teacher_forcing needs the gold target {cfg.split}.{src}-{tgt}.{tgt} in {cfg.data}")
    if cfg.select != "top" and data.tgt_ds is None:
        raise KDInputError(f"--select {cfg.select} needs the gold target of split '{cfg.split}' in {cfg.data}")
    try:  # the teacher's own dictionaries (from its checkpoint's data dir, or --teacher-data)
        teacher = load_teacher(cfg.teacher_path, teacher_data=cfg.teacher_data, trust=cfg.trust_checkpoint)
    except KDInputError:
        if cfg.teacher_data:
            raise
        logger.info("teacher's data dir moved: reading its dictionaries from --data %s", cfg.data)
        teacher = load_teacher(cfg.teacher_path, teacher_data=cfg.data, trust=cfg.trust_checkpoint)
    check_same_dictionary(teacher.src_dict, "the teacher's source dictionary", data.src_dict, data.src_dict_file, "source")
    check_same_dictionary(teacher.tgt_dict, "the teacher's target dictionary", data.tgt_dict, data.tgt_dict_file, "target")

    work = os.path.join(cfg.output_dir, "shards")
    if cfg.overwrite and os.path.isdir(work):
        shutil.rmtree(work)
    store = ShardStore(work, meta_of(cfg, data, teacher.fingerprint()))
    backend = build_backend(teacher, data, cfg)
    detok_src, detok_tgt = Detokenizer(cfg.spm_model), Detokenizer(cfg.spm_model_tgt or cfg.spm_model)

    ranges = shard_ranges(len(data), cfg.shard_size)
    todo = [k for k in range(len(ranges)) if not store.done(k)]
    timing_file = os.path.join(work, "timing.json")
    timing = json.load(open(timing_file)) if os.path.exists(timing_file) else {}
    logger.info("distilling %s (%d sentences, %d shards, %d to do) with %s/%s", cfg.split, len(data), len(ranges),
                len(todo), cfg.backend, cfg.decoding.signature())
    progress = None
    if cfg.progress:
        from tqdm import tqdm

        progress = tqdm(total=sum(len(ranges[k]) for k in todo), desc=f"distill {cfg.split}", unit="sent")
    for k in todo:
        torch.manual_seed(cfg.seed + k)  # sampling: a shard's draws do not depend on the others
        if hasattr(backend, "set_seed"):
            backend.set_seed(cfg.seed + k)
        t0 = time.perf_counter()
        records = decode_shard(backend, data, ranges[k], cfg, detok_tgt, progress)
        seconds = time.perf_counter() - t0
        store.write(k, ranges[k], records)
        timing[str(k)] = seconds
        atomic_write_text(timing_file, json.dumps(timing, sort_keys=True))
    if progress is not None:
        progress.close()
    return publish(cfg, data, store, ranges, timing, detok_src, detok_tgt)


def publish(cfg: DistillConfig, data: SplitData, store: ShardStore, ranges, timing, detok_src, detok_tgt) -> Dict:
    """Check alignment, then write text, binarized data and the summary (each atomically)."""
    import sacrebleu
    from fairseq.data import indexed_dataset

    records = [r for k, ids in enumerate(ranges) for r in store.read(k, ids)]
    if [r["id"] for r in records] != list(range(len(data))):
        raise RuntimeError(f"alignment check failed: {len(records)} records for {len(data)} source lines")
    src, tgt, split = data.src, data.tgt, cfg.split
    out = cfg.output_dir
    src_pieces = [to_pieces(data.src_dict, data.src_ds[i]) for i in range(len(data))]
    tgt_pieces = [to_pieces(data.tgt_dict, r["tgt"]) for r in records]
    n_src = atomic_write_lines(os.path.join(out, f"{split}.{src}"), src_pieces)
    n_tgt = atomic_write_lines(os.path.join(out, f"{split}.{tgt}"), tgt_pieces)
    hyp_text = [detok_tgt(p) for p in tgt_pieces]
    if detok_tgt.sp is not None:
        atomic_write_lines(os.path.join(out, f"{split}.detok.{src}"), (detok_src(p) for p in src_pieces))
        atomic_write_lines(os.path.join(out, f"{split}.detok.{tgt}"), hyp_text)
    if not (n_src == n_tgt == len(data)):
        raise RuntimeError(f"alignment check failed: wrote {n_src} source / {n_tgt} target lines for {len(data)}")

    # binarized copy with the teacher's dictionaries, ready for fairseq-train
    bin_dir = os.path.join(out, "bin")
    os.makedirs(bin_dir, exist_ok=True)
    for lang, d in ((src, data.src_dict), (tgt, data.tgt_dict)):
        tmp = os.path.join(bin_dir, f"dict.{lang}.txt.tmp")
        d.save(tmp)
        os.replace(tmp, os.path.join(bin_dir, f"dict.{lang}.txt"))
    for lang, d, items in ((src, data.src_dict, (data.src_ds[i] for i in range(len(data)))),
                           (tgt, data.tgt_dict, (torch.tensor(r["tgt"]) for r in records))):
        prefix = os.path.join(bin_dir, f"{split}.{src}-{tgt}.{lang}")
        builder = indexed_dataset.make_builder(prefix + ".bin.tmp", impl="mmap", vocab_size=len(d))
        for t in items:
            builder.add_item(t.long())
        builder.finalize(prefix + ".idx.tmp")
        os.replace(prefix + ".bin.tmp", prefix + ".bin")
        os.replace(prefix + ".idx.tmp", prefix + ".idx")
    check = indexed_dataset.MMapIndexedDataset(os.path.join(bin_dir, f"{split}.{src}-{tgt}.{tgt}"))
    if len(check) != len(data):
        raise RuntimeError(f"alignment check failed: binarized target has {len(check)} lines for {len(data)}")
    for other in cfg.copy_splits:
        for lang in (src, tgt):
            p = split_prefix(cfg.data, other, src, tgt, lang)
            if p is None:
                raise KDInputError(f"--copy-splits {other}: no binarized {other} split ({src}-{tgt}) in {cfg.data}")
            for ext in (".bin", ".idx"):
                dst = os.path.join(bin_dir, f"{other}.{src}-{tgt}.{lang}{ext}")
                shutil.copyfile(p + ext, dst + ".tmp")
                os.replace(dst + ".tmp", dst)

    # summary
    seconds = sum(timing.get(str(k), 0.0) for k in range(len(ranges)))
    n_tokens = sum(len(r["tgt"]) - 1 for r in records)
    summary = {
        "split": split, "sentences": len(data), "tokens": n_tokens,
        "decode_seconds": round(seconds, 3),
        "sent_per_s": round(len(data) / seconds, 2) if seconds > 0 else None,
        "tokens_per_s": round(n_tokens / seconds, 1) if seconds > 0 else None,
        "empty_hypotheses": sum(r["fallback"] == "empty" for r in records),
        "failed_hypotheses": sum(r["fallback"] == "failed" for r in records),
        "fallback_to_gold": sum(r["fallback"] is not None and data.tgt_ds is not None for r in records),
        "nbest_rank_histogram": _histogram(r["rank"] for r in records),
        "backend": cfg.backend, "decoding": asdict(cfg.decoding), "select": cfg.select,
        "text_level": "detokenized" if detok_tgt.sp is not None else "pieces",
        "outputs": {"text": [f"{split}.{src}", f"{split}.{tgt}"], "bin": "bin"},
    }
    if data.tgt_ds is not None:
        refs = [detok_tgt(to_pieces(data.tgt_dict, data.gold(i))) for i in range(len(data))]
        bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
        summary["bleu"] = round(bleu.corpus_score(hyp_text, [refs]).score, 2)
        summary["chrf"] = round(chrf.corpus_score(hyp_text, [refs]).score, 2)
        summary["bleu_signature"] = str(bleu.get_signature())
    summary["signature"] = signature(cfg, store.meta)
    atomic_write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary


def _histogram(ranks) -> Dict[str, int]:
    h: Dict[str, int] = {}
    for r in ranks:
        h[str(r)] = h.get(str(r), 0) + 1
    return dict(sorted(h.items()))


def signature(cfg: DistillConfig, meta: Dict) -> str:
    """sacrebleu-style reproducibility signature of the run."""
    import fairseq

    import fairseq_kd

    keys = ("decoding", "select", "backend", "shard_size", "seed")
    parts = [f"{k}:{meta[k]}" for k in keys] + [f"teacher:{meta['teacher'][:12]}",
                                               f"fairseq_kd:{fairseq_kd.__version__}", f"fairseq:{fairseq.__version__}"]
    return "|".join(parts)
