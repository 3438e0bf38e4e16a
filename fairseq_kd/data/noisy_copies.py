"""K fixed noisy copies of a binarized training split: the source a teacher reads when it
translates the student's noisy input offline (sequence-level KD under noise).

Copy ``c`` (1..K) of sentence ``i`` is exactly what ``kd_translation``'s on-the-fly noise gives
sentence ``i`` in epoch ``c`` with the same seed (``NoisyLanguagePairDataset.noise_tokens``), so a
student trained on the copies sees the source noise an on-the-fly student sees in its first K
epochs. Line ``(c - 1) * N + i`` of the output's train split is copy ``c`` of sentence ``i``; the
target side is the gold target, repeated (``fairseq-kd-distill`` replaces it with the teacher's
translations of the noisy source). Every other split of the input dir is linked, not noised.

The output directory appears only when complete (built under a temporary name, then renamed);
``noisy_copies.json`` in it records what it was made from.
"""
import json
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Dict

from fairseq_kd import noise as N
from fairseq_kd.errors import KDInputError

META = "noisy_copies.json"


@dataclass(frozen=True)
class CopiesConfig:
    noise: N.NoiseConfig
    copies: int = 8
    seed: int = 1  # the on-the-fly noise's seed (kd_translation uses the training --seed)
    split: str = "train"


def _meta(data, cfg: CopiesConfig) -> Dict:
    from fairseq_kd import fingerprint as fp

    return {"data": os.path.abspath(data.data), "source": fp.prefix_fingerprint(data.src_prefix)[:16],
            "langs": f"{data.src}-{data.tgt}", "split": cfg.split, "sentences": len(data), "copies": cfg.copies,
            "seed": cfg.seed, "noise": asdict(cfg.noise)}


def write_noisy_copies(data: str, src: str, tgt: str, out_dir: str, cfg: CopiesConfig, progress: bool = False) -> Dict:
    """Build ``out_dir`` (once): the K noisy copies of ``data``'s ``cfg.split`` and links to its other
    splits. Returns the metadata; an existing ``out_dir`` made from other settings is refused."""
    from fairseq.data import indexed_dataset

    from fairseq_kd.data.noisy_dataset import NoisyDatasetConfig, NoisyLanguagePairDataset
    from fairseq_kd.distill.data import SplitData

    if cfg.copies < 1:
        raise KDInputError(f"--copies {cfg.copies}: pass a positive number of noisy copies")
    if not cfg.noise.active:
        raise KDInputError("noisy copies need a noise rate > 0 (--deletion / --substitution / --swap)")
    split = SplitData(data, cfg.split, src, tgt)  # dictionaries, both sides, aligned (clear errors otherwise)
    if split.tgt_ds is None:
        raise KDInputError(f"no binarized target for split '{cfg.split}' ({src}-{tgt}) in {data}: the copies "
                           f"keep the gold target beside each noisy source")
    meta = _meta(split, cfg)
    meta_path = os.path.join(out_dir, META)
    if os.path.isdir(out_dir):
        if os.path.isfile(meta_path):
            from fairseq_kd import integrity

            old = integrity.load_json(meta_path, f"delete {out_dir} to rebuild it")
            if old == meta:
                return meta
            diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
            raise KDInputError(f"{out_dir} holds noisy copies made with other settings ({', '.join(diff)} differ): "
                               f"use another --output-dir, or delete it")
        raise KDInputError(f"{out_dir} exists and is not a noisy-copies dir (no {META}): use another --output-dir")

    src_ds, tgt_ds = split.src_ds, split.tgt_ds
    noisy = NoisyLanguagePairDataset(split.pairs, NoisyDatasetConfig(cfg.noise, side="source", teacher_input="noisy",
                                                               seed=cfg.seed))
    tmp = f"{out_dir.rstrip(os.sep)}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    out_src = os.path.join(tmp, f"{cfg.split}.{src}-{tgt}.{src}")
    out_tgt = os.path.join(tmp, f"{cfg.split}.{src}-{tgt}.{tgt}")
    b_src = indexed_dataset.make_builder(out_src + ".bin", impl="mmap", vocab_size=len(split.src_dict))
    b_tgt = indexed_dataset.make_builder(out_tgt + ".bin", impl="mmap", vocab_size=len(split.tgt_dict))
    from tqdm import tqdm

    with tqdm(total=cfg.copies * len(src_ds), desc="noisy copies", unit="sent", disable=not progress) as bar:
        for c in range(1, cfg.copies + 1):
            noisy.set_epoch(c)  # copy c = the on-the-fly noise of epoch c
            for i in range(len(src_ds)):
                b_src.add_item(noisy.noise_tokens(src_ds[i], i, "source"))
                b_tgt.add_item(tgt_ds[i])
            bar.update(len(src_ds))
    b_src.finalize(out_src + ".idx")
    b_tgt.finalize(out_tgt + ".idx")
    for name in sorted(os.listdir(data)):  # dictionaries and every other split: links to the clean files
        own = name.startswith(f"{cfg.split}.{src}-{tgt}.") and name.endswith((".bin", ".idx"))
        if not own and (name.startswith("dict.") or name.endswith((".bin", ".idx"))):
            os.symlink(os.path.abspath(os.path.join(data, name)), os.path.join(tmp, name))
    with open(os.path.join(tmp, META), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, out_dir)  # appears complete or not at all
    return meta
