"""What a study's cells train on, built once per study and shared by every cell that needs it:

* ``distilled/DECODING[/TEACHER][/noisy-LEVEL]/bin``: the teacher's translations of the training
  source (``fairseq-kd-distill``), for offline ``seq`` / ``hybrid``; of the noisy copies below for
  the methods whose teacher reads the student's noisy source (``seq_tnoisy``);
* ``noisy/LEVEL_kK``: K fixed noisy copies of the training source at one noise level
  (``fairseq-kd-noise --data-bin``; copy c = the on-the-fly noise of epoch c);
* ``cache/NAME_topK``: the teacher's top-k distributions of a data dir's train and valid splits
  (``fairseq-kd-cache``), for the word-level methods of ``--cache-methods``.

Each is built through the study's runner (the same tools a user runs by hand) and recognised
as finished by a file the tool writes last, so a killed study rebuilds only what was unfinished.
"""
import logging
import os
import time
from pathlib import Path
from typing import Callable, List, Optional

from fairseq_kd import fileio
from fairseq_kd.study import commands as C
from fairseq_kd.study.config import StudyConfig, fmt_num
from fairseq_kd.study.teachers import dir_name, teacher_path

logger = logging.getLogger("fairseq_kd.study")


class CellInputs:
    """Mixin of ``Study``: needs ``cfg``, ``out``, ``runner`` and ``launched``."""

    cfg: StudyConfig
    out: Path
    runner: Callable[..., None]
    launched: List[str]

    def noise_tag(self, level: float) -> str:
        ops = "+".join(op[:3] for op in self.cfg.noise_ops)
        return f"{ops}{fmt_num(level)}"

    def noisy_copies(self, level: float) -> str:
        """Build (once) ``cfg.noise_copies`` noisy copies of the training source at ``level``; returns the dir."""
        out = self.out / "noisy" / f"{self.noise_tag(level)}_k{self.cfg.noise_copies}"
        if not (out / "noisy_copies.json").exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            logger.info("writing %d noisy copies of the training source (noise %s) into %s", self.cfg.noise_copies,
                        fmt_num(level), out)
            self.launched.append("fairseq-kd-noise")
            self.runner(C.noise_copies_command(self.cfg, level, str(out)), str(out) + ".log")
        return str(out)

    def distilled_data(self, decoding: str, teacher: str, noise: Optional[float] = None) -> str:
        """Build (once) the distilled corpus for ``decoding`` and ``teacher`` (``PATH`` or ``NAME=PATH``; of the
        noisy copies at ``noise`` when given); returns its binarized dir."""
        out = self.out / "distilled" / decoding
        if teacher_path(teacher) != self.cfg.teacher:
            out = out / dir_name(teacher)
        source, log = self.cfg.data, out.parent / f"{decoding}.log"
        if noise is not None:
            source = self.noisy_copies(noise)
            out = out / f"noisy-{os.path.basename(source)}"
            log = Path(str(out) + ".log")
        done = out / "bin" / f"dict.{self.cfg.target_lang}.txt"
        if not (done.exists() and (out / "summary.json").exists()):
            out.mkdir(parents=True, exist_ok=True)
            logger.info("distilling the training set of %s with %s decoding into %s", source, decoding, out)
            self.launched.append("fairseq-kd-distill")
            self.runner(C.distill_command(self.cfg, decoding, str(out), teacher_path(teacher), source), str(log))
        return str(out / "bin")

    def distilled_name(self, data: str) -> str:
        """A distilled corpus's name: its dir under ``distilled/`` ('beam', 'greedy-big', 'beam-noisy-sub0.3_k8'),
        unique per (decoding, teacher, noisy copies) as those dirs are."""
        folder = os.path.dirname(os.path.normpath(data))
        rel = os.path.relpath(folder, self.out / "distilled")
        return os.path.basename(folder) if rel.startswith("..") else rel.replace(os.sep, "-")

    def teacher_cache(self, data: str, teacher: str) -> str:
        """Build (once) the top-k cache of ``data``'s train and valid splits by ``teacher`` (``PATH`` or
        ``NAME=PATH``); returns its dir."""
        name = "corpus" if data == self.cfg.data else self.distilled_name(data)
        if teacher_path(teacher) != self.cfg.teacher:
            name += "_" + dir_name(teacher)
        out = self.out / "cache" / f"{name}_top{self.cfg.cache_topk}"
        done = out / ".complete"
        if not done.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            logger.info("caching the teacher's top-%d of %s into %s", self.cfg.cache_topk, data, out)
            self.launched.append("fairseq-kd-cache")
            t0 = time.time()
            self.runner(C.cache_command(self.cfg, data, teacher_path(teacher), str(out)),
                        str(out.parent / f"{out.name}.log"))
            fileio.atomic_write_json(done, {"seconds": round(time.time() - t0, 2), "data": data,
                                            "teacher": teacher_path(teacher)})
        return str(out)
