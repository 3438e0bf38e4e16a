"""The study harness: a grid of student trainings, each decoded, scored and recorded.

Grid (arXiv 2312.08585 / 2404.14827 / Kim & Rush 2016):
KD method (none, word, seq, hybrid) x noise level x student arch x decoding strategy
used to build the distilled data (beam, greedy, teacher_forcing) x learning rate x seed.

Each cell, through the real command-line tools (subprocesses, so a cell is exactly what a
user would run by hand):

1. data: the prepared corpus, or for offline ``seq`` the distilled corpus that
   ``fairseq-kd-distill`` builds once per decoding strategy (shared by all cells);
2. ``fairseq-train --user-dir fairseq_kd --task kd_translation`` with the method's
   criterion (``label_smoothed_cross_entropy``, ``word_kd``, ``seq_kd``, ``hybrid_kd``)
   and on-the-fly noise on the student's source (``--noise-*``; the teacher reads clean);
   validation BLEU (``--eval-bleu``) is logged every ``validate_interval_updates``;
3. ``fairseq-generate`` on the test split, hypotheses restored to input order,
   sentencepiece removed;
4. sacrebleu BLEU / chrF against the raw reference (``fairseq_kd.scoring``);
5. one row appended to ``results.csv`` (atomically: tmp file + ``os.replace``) and the
   cell's validation curve to ``curves.csv``.

Resume: a cell whose key (all grid coordinates) is in ``results.csv`` is skipped; inside
a cell, finished steps are skipped (``train.json``, ``hyp.txt``) and fairseq-train itself
resumes from ``checkpoint_last.pt``. ``study.json`` records the non-grid settings, and
a resume with different settings is refused (they would mix incomparable rows).
"""
import csv
import io
import itertools
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from fairseq_kd.errors import KDInputError

logger = logging.getLogger("fairseq_kd.study")

METHODS = ("none", "word", "seq", "hybrid")
DECODINGS = ("beam", "greedy", "teacher_forcing")
NOISE_OPS = ("deletion", "substitution", "swap")
NO_DECODING = "-"  # the decoding coordinate of methods that use no distilled data

RESULT_FIELDS = ["method", "noise", "arch", "decoding", "lr", "seed", "parameters", "bleu", "chrf", "tok_bleu",
                 "signature", "train_time", "updates", "cell"]
CURVE_FIELDS = ["method", "noise", "arch", "decoding", "lr", "seed", "updates", "valid_bleu"]
KEY_FIELDS = ("method", "noise", "arch", "decoding", "lr", "seed")

# What each method trains with. ``data``: "corpus" or "distilled" (offline seq-KD data);
# ``teacher``: pass --teacher-path; ``decoding``: the method varies over decodings,
# passed as the task's --seq-kd-decoding when online.
METHOD_SPECS = {
    "none": {"criterion": "label_smoothed_cross_entropy", "data": "corpus", "teacher": False, "decoding": False},
    "word": {"criterion": "word_kd", "data": "corpus", "teacher": True, "decoding": False},
    "seq": {"criterion": "label_smoothed_cross_entropy", "data": "distilled", "teacher": False, "decoding": True},
    "seq_online": {"criterion": "seq_kd", "data": "corpus", "teacher": True, "decoding": True},
    "hybrid": {"criterion": "hybrid_kd", "data": "corpus", "teacher": True, "decoding": True},
}


def fmt_num(x: float) -> str:
    """Canonical text of a grid number (0.1 -> '0.1', 5e-4 -> '0.0005', 0.0 -> '0') for keys and names."""
    return f"{float(x):g}"


@dataclass(frozen=True)
class Cell:
    """One grid point; ``key`` identifies it in results.csv."""

    method: str
    noise: float
    arch: str
    decoding: str
    lr: float
    seed: int

    def key(self) -> Tuple[str, ...]:
        return (self.method, fmt_num(self.noise), self.arch, self.decoding, fmt_num(self.lr), str(self.seed))

    def slug(self) -> str:
        dec = "nodec" if self.decoding == NO_DECODING else self.decoding
        text = f"{self.method}_noise{fmt_num(self.noise)}_{self.arch}_{dec}_lr{fmt_num(self.lr)}_seed{self.seed}"
        return re.sub(r"[^A-Za-z0-9_.=+-]", "", text)


def row_key(row: Dict) -> Tuple[str, ...]:
    """The key of a results.csv row (same canonical text as ``Cell.key``)."""
    return (row["method"], fmt_num(float(row["noise"])), row["arch"], row["decoding"], fmt_num(float(row["lr"])),
            str(int(float(row["seed"]))))


@dataclass
class StudyConfig:
    """Where the corpus and teacher are, the grid, and how to train / decode / score."""

    data: str  # binarized corpus (fairseq-preprocess --joined-dictionary)
    out_dir: str
    test_ref: str  # raw reference of the test split (detokenized, aligned)
    source_lang: str
    target_lang: str
    teacher: Optional[str] = None  # teacher checkpoint (word / seq / hybrid)
    spm_model: Optional[str] = None  # passed to fairseq-kd-distill for detokenized summaries
    gen_subset: str = "test"
    # grid
    methods: Sequence[str] = ("none",)
    noise: Sequence[float] = (0.0,)
    archs: Sequence[str] = ("transformer",)
    decodings: Sequence[str] = ("beam",)
    lrs: Sequence[float] = (5e-4,)
    seeds: Sequence[int] = (1,)
    # noise
    noise_ops: Sequence[str] = NOISE_OPS
    noise_side: str = "source"
    noise_swap_window: int = 3
    # training
    max_update: int = 2000
    max_tokens: int = 4096
    warmup_updates: int = 400
    validate_interval_updates: int = 500
    label_smoothing: float = 0.1
    train_args: str = ""  # extra fairseq-train flags (shlex), after the defaults
    method_args: Dict[str, str] = field(default_factory=dict)  # method -> extra flags
    # decoding / scoring
    beam: int = 5
    # output length limit a * source length + b for test decoding, validation BLEU and
    # distillation alike (the defaults of scripts/decode.sh and fairseq-kd-distill): an
    # undertrained student that loops would otherwise emit 200 tokens and its BLEU would
    # measure the loop, not the translations
    max_len_a: float = 1.2
    max_len_b: int = 10
    bpe: str = "sentencepiece"  # --remove-bpe for fairseq-generate and --eval-bleu ("none" for word-level)
    gen_args: str = ""
    distill_args: str = ""  # extra fairseq-kd-distill flags
    cpu: bool = True
    keep_going: bool = False

    def validate(self) -> None:
        for m in self.methods:
            if m not in METHOD_SPECS:
                raise KDInputError(f"unknown method {m!r}: choose from {', '.join(METHOD_SPECS)}")
        for d in self.decodings:
            if d not in DECODINGS:
                raise KDInputError(f"unknown decoding {d!r}: choose from {', '.join(DECODINGS)}")
        for op in self.noise_ops:
            if op not in NOISE_OPS:
                raise KDInputError(f"unknown noise op {op!r}: choose from {', '.join(NOISE_OPS)}")
        for n in self.noise:
            if not 0 <= float(n) <= 1:
                raise KDInputError(f"noise level {n} is not a probability in [0, 1]")
        if not os.path.isdir(self.data):
            raise KDInputError(f"--data {self.data}: not a directory; pass the fairseq-preprocess output dir")
        for lang in (self.source_lang, self.target_lang):
            if not os.path.isfile(os.path.join(self.data, f"dict.{lang}.txt")):
                raise KDInputError(f"--data {self.data} has no dict.{lang}.txt: check --source-lang/--target-lang")
        if not os.path.isfile(self.test_ref):
            raise KDInputError(f"--test-ref {self.test_ref}: no such file; pass the raw reference of the test split")
        needs_teacher = any(METHOD_SPECS[m]["teacher"] or METHOD_SPECS[m]["data"] == "distilled" for m in self.methods)
        if needs_teacher and not (self.teacher and all(os.path.isfile(p) for p in self.teacher.split(":"))):
            raise KDInputError(f"methods {', '.join(self.methods)} need a teacher: pass --teacher CKPT "
                               f"(got {self.teacher!r})")

    def settings_fingerprint(self) -> Dict:
        """Non-grid settings: a resume must use the same ones."""
        grid = {"methods", "noise", "archs", "decodings", "lrs", "seeds", "keep_going", "out_dir"}
        return {k: v for k, v in asdict(self).items() if k not in grid}


def build_grid(cfg: StudyConfig) -> List[Cell]:
    """All cells; methods without distilled data / online decoding get decoding '-'."""
    cells = []
    for method, noise, arch, lr, seed in itertools.product(cfg.methods, cfg.noise, cfg.archs, cfg.lrs, cfg.seeds):
        decodings = cfg.decodings if METHOD_SPECS[method]["decoding"] else [NO_DECODING]
        for dec in decodings:
            cells.append(Cell(method, float(noise), arch, dec, float(lr), int(seed)))
    return cells


# ---------------------------------------------------------------- tools and commands


def find_tool(name: str) -> str:
    """Path of a console tool: on PATH, else beside this Python; clear error if missing."""
    path = shutil.which(name) or (str(Path(sys.executable).parent / name)
                                  if (Path(sys.executable).parent / name).exists() else None)
    module = {"fairseq-kd-distill": "fairseq_kd.cli.distill"}.get(name)
    if module:
        import importlib.util

        if importlib.util.find_spec(module) is None:
            path = None
    if path is None:
        raise KDInputError(f"the study needs the tool {name}, which is not installed here: install fairseq-kd into "
                           f"this environment (pip install --no-deps -e /path/to/fairseq-kd) and check that "
                           f"{name} runs")
    return path


def check_criteria(cfg: StudyConfig) -> None:
    """Every method's criterion must be registered (fairseq_kd/criteria/<name>.py present)."""
    import fairseq_kd  # noqa: F401  (registers the plugins)
    from fairseq.criterions import CRITERION_REGISTRY

    for m in cfg.methods:
        crit = METHOD_SPECS[m]["criterion"]
        if crit not in CRITERION_REGISTRY:
            raise KDInputError(f"method {m!r} trains with criterion {crit!r}, which is not registered: "
                               f"fairseq_kd/criteria/{crit}.py is missing from this install")


def noise_flags(cfg: StudyConfig, level: float) -> List[str]:
    if level <= 0:
        return []
    flags = [f"--noise-{op}" for op in cfg.noise_ops]
    out = []
    for f in flags:
        out += [f, fmt_num(level)]
    return out + ["--noise-side", cfg.noise_side, "--noise-swap-window", str(cfg.noise_swap_window)]


def train_command(cfg: StudyConfig, cell: Cell, data: str, save_dir: str) -> List[str]:
    spec = METHOD_SPECS[cell.method]
    cmd = [find_tool("fairseq-train"), data, "--user-dir", _user_dir(), "--task", "kd_translation",
           "--source-lang", cfg.source_lang, "--target-lang", cfg.target_lang,
           "--arch", cell.arch, "--criterion", spec["criterion"],
           "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", fmt_num(cell.lr),
           "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(cfg.warmup_updates),
           "--max-update", str(cfg.max_update), "--max-tokens", str(cfg.max_tokens), "--seed", str(cell.seed),
           "--save-dir", save_dir, "--no-epoch-checkpoints", "--keep-interval-updates", "1",
           "--log-format", "simple", "--log-interval", "50", "--no-progress-bar",
           # validate and save by updates only (and at the end), never per epoch
           "--validate-interval-updates", str(cfg.validate_interval_updates),
           "--save-interval-updates", str(cfg.validate_interval_updates),
           "--validate-interval", "1000000", "--save-interval", "1000000",
           "--eval-bleu", "--eval-bleu-args",
           json.dumps({"beam": 1, "max_len_a": cfg.max_len_a, "max_len_b": cfg.max_len_b}), "--eval-bleu-detok", "space",
           "--num-workers", "0",
           # fairseq 0.12 drops the last batch when its size is not a multiple of this
           # (default 8; facebookresearch/fairseq#5036): keep every sentence
           "--required-batch-size-multiple", "1"]
    if cfg.bpe != "none":
        cmd += ["--eval-bleu-remove-bpe", cfg.bpe]
    if spec["criterion"] in ("label_smoothed_cross_entropy", "word_kd", "hybrid_kd"):
        cmd += ["--label-smoothing", fmt_num(cfg.label_smoothing)]
    if spec["teacher"]:
        cmd += ["--teacher-path", cfg.teacher]
    if spec["decoding"] and spec["data"] == "corpus":
        cmd += ["--seq-kd-decoding", cell.decoding]
    cmd += noise_flags(cfg, cell.noise)
    if cfg.cpu:
        cmd += ["--cpu"]
    cmd += shlex.split(cfg.train_args) + shlex.split(cfg.method_args.get(cell.method, ""))
    return cmd


def generate_command(cfg: StudyConfig, data: str, checkpoint: str) -> List[str]:
    cmd = [find_tool("fairseq-generate"), data, "--user-dir", _user_dir(), "--path", checkpoint,
           "--source-lang", cfg.source_lang, "--target-lang", cfg.target_lang, "--gen-subset", cfg.gen_subset,
           "--beam", str(cfg.beam), "--max-tokens", str(cfg.max_tokens), "--num-workers", "0",
           "--max-len-a", fmt_num(cfg.max_len_a), "--max-len-b", str(cfg.max_len_b),
           "--required-batch-size-multiple", "1"]  # else up to 7 test sentences vanish (fairseq#5036)
    if cfg.bpe != "none":
        cmd += ["--remove-bpe", cfg.bpe]
    if cfg.cpu:
        cmd += ["--cpu"]
    return cmd + shlex.split(cfg.gen_args)


def distill_command(cfg: StudyConfig, decoding: str, out: str) -> List[str]:
    cmd = [find_tool("fairseq-kd-distill"), "--data", cfg.data, "--split", "train", "--teacher", cfg.teacher,
           "--source-lang", cfg.source_lang, "--target-lang", cfg.target_lang, "--decoding", decoding,
           "--beam", str(cfg.beam) if decoding == "beam" else "1", "--output-dir", out, "--no-progress",
           "--max-len-a", fmt_num(cfg.max_len_a), "--max-len-b", str(cfg.max_len_b),
           "--copy-splits", ",".join(sorted({"valid", cfg.gen_subset}))]
    if cfg.spm_model:
        cmd += ["--spm-model", cfg.spm_model]
    if cfg.cpu:
        cmd += ["--cpu"]
    return cmd + shlex.split(cfg.distill_args)


def _user_dir() -> str:
    return str(Path(__file__).resolve().parent)


# ---------------------------------------------------------------- parsing tool output

_PARAMS = re.compile(r"num\. shared model params: ([\d,]+)")
_VALID = re.compile(r"valid on '[^']*' subset \|.*")
_FIELD = re.compile(r"\| (\w+) ([-\d.e+]+)")


def parse_train_log(text: str) -> Dict:
    """Parameters, last num_updates and the validation BLEU curve from a fairseq-train log."""
    params = _PARAMS.findall(text)
    curve: Dict[int, float] = {}
    updates = 0
    for line in text.splitlines():
        fields = dict(_FIELD.findall(line))
        if "num_updates" in fields:
            updates = max(updates, int(float(fields["num_updates"])))
        if _VALID.search(line) and "bleu" in fields and "num_updates" in fields:
            curve[int(float(fields["num_updates"]))] = float(fields["bleu"])
    return {"parameters": int(params[-1].replace(",", "")) if params else None, "updates": updates,
            "curve": sorted(curve.items())}


def parse_generate(text: str) -> List[str]:
    """Hypotheses (``H-<id>`` lines) in input order; ids must be 0..n-1."""
    hyps = {}
    for line in text.splitlines():
        if line.startswith("H-"):
            idx, _score, hyp = (line.split("\t", 2) + ["", ""])[:3]
            hyps[int(idx[2:])] = hyp
    if sorted(hyps) != list(range(len(hyps))):
        raise KDInputError("fairseq-generate output has gaps in its sentence ids; was --max-len or filtering on?")
    return [hyps[i] for i in range(len(hyps))]


# ---------------------------------------------------------------- csv files


def read_csv(path: str) -> List[Dict]:
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_csv_atomic(path: str, rows: List[Dict], fields: List[str]) -> None:
    """Write exactly ``rows`` to ``path`` through a tmp file and ``os.replace``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_rows_atomic(path: str, rows: List[Dict], fields: List[str]) -> None:
    """Append ``rows`` to a csv file atomically (rewrites it whole: results files are small)."""
    write_csv_atomic(path, read_csv(path) + list(rows), fields)


def write_json_atomic(path: str, obj) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


# ---------------------------------------------------------------- running

Runner = Callable[..., None]  # (cmd, log_path)


def run_logged(cmd: List[str], log_path: str) -> None:
    """Run ``cmd``, appending its stdout+stderr to ``log_path``; raise naming the log on failure.

    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n$ {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = "".join(f.readlines()[-15:])
        raise RuntimeError(f"{os.path.basename(cmd[0])} failed (exit {proc.returncode}); log: {log_path}\n{tail}")


def run_inprocess(cmd: List[str], log_path: str) -> None:
    """Same as ``run_logged`` but calls the tool's Python entry point in this process.

    Saves the interpreter start-up and imports of every subprocess (seconds per call on
    a small CPU); used by the tests and by ``fairseq-kd-study --in-process``. Log lines
    go to ``log_path`` in fairseq's simple format, so parsing is identical.
    """
    import contextlib

    tool, argv = os.path.basename(cmd[0]), cmd[1:]
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    quieted = [(h, h.level) for h in root.handlers]
    for h, level in quieted:  # the tool's INFO lines go to the log file only
        h.setLevel(max(level, logging.WARNING))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with open(log_path, "a", encoding="utf-8") as out, contextlib.redirect_stdout(out):
            out.write(f"\n$ {shlex.join(cmd)}\n")
            out.flush()
            if tool in ("fairseq-train", "fairseq-generate"):
                from fairseq import options
                from fairseq.dataclass.utils import convert_namespace_to_omegaconf

                if tool == "fairseq-train":
                    from fairseq_cli.train import main
                    parser = options.get_training_parser()
                else:
                    from fairseq_cli.generate import main
                    parser = options.get_generation_parser()
                main(convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv)))
            elif tool == "fairseq-kd-distill":
                from fairseq_kd.cli.distill import main

                main(argv)
            else:
                raise KDInputError(f"no in-process entry point for {tool}")
    except SystemExit as e:
        if e.code not in (0, None):
            raise RuntimeError(f"{tool} failed (exit {e.code}); log: {log_path}") from None
    finally:
        root.removeHandler(handler)
        handler.close()
        for h, level in quieted:
            h.setLevel(level)
        root.setLevel(old_level)


class Study:
    """Runs the grid of a ``StudyConfig``; ``run()`` returns a summary dict."""

    def __init__(self, cfg: StudyConfig, runner: Runner = run_logged):
        self.cfg = cfg
        self.runner = runner
        self.out = Path(cfg.out_dir)
        self.results = str(self.out / "results.csv")
        self.curves = str(self.out / "curves.csv")
        self.launched: List[str] = []  # tool names launched (the resume test counts them)

    def preflight(self, cells: List[Cell]) -> None:
        """Fail before any work: bad paths, missing tools or criteria, changed settings."""
        self.cfg.validate()
        find_tool("fairseq-train")
        find_tool("fairseq-generate")
        if any(METHOD_SPECS[c.method]["data"] == "distilled" for c in cells):
            find_tool("fairseq-kd-distill")
        check_criteria(self.cfg)
        self.out.mkdir(parents=True, exist_ok=True)
        settings = self.out / "study.json"
        current = json.loads(json.dumps(self.cfg.settings_fingerprint()))
        if settings.exists():
            previous = json.loads(settings.read_text())
            changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            if changed:
                raise KDInputError(f"{settings} was written with different settings ({', '.join(changed)}): "
                                   f"resume with the same settings or use a new --out-dir")
        else:
            write_json_atomic(str(settings), current)

    def run(self, progress: bool = True) -> Dict:
        from tqdm import tqdm

        cells = build_grid(self.cfg)
        self.preflight(cells)
        done = {row_key(r) for r in read_csv(self.results)}
        todo = [c for c in cells if c.key() not in done]
        logger.info("study: %d cells, %d already in %s, %d to run", len(cells), len(cells) - len(todo),
                    self.results, len(todo))
        failed = []
        for cell in tqdm(todo, desc="study cells", disable=not progress, file=sys.stderr):
            try:
                self.run_cell(cell)
            except Exception as err:  # noqa: BLE001  (reported, study continues with --keep-going)
                logger.error("cell %s failed: %s", cell.slug(), err)
                failed.append({"cell": cell.slug(), "error": str(err).splitlines()[0]})
                if not self.cfg.keep_going:
                    raise
        return {"cells": len(cells), "skipped": len(cells) - len(todo), "ran": len(todo) - len(failed),
                "failed": failed, "results": self.results, "curves": self.curves}

    def distilled_data(self, decoding: str) -> str:
        """Build (once) the distilled corpus for ``decoding``; returns its binarized dir."""
        out = self.out / "distilled" / decoding
        done = out / "bin" / f"dict.{self.cfg.target_lang}.txt"
        if not (done.exists() and (out / "summary.json").exists()):
            out.mkdir(parents=True, exist_ok=True)
            logger.info("distilling the training set with %s decoding into %s", decoding, out)
            self.launched.append("fairseq-kd-distill")
            self.runner(distill_command(self.cfg, decoding, str(out)), str(out.parent / f"{decoding}.log"))
        return str(out / "bin")

    def run_cell(self, cell: Cell) -> Dict:
        cfg = self.cfg
        cdir = self.out / "cells" / cell.slug()
        cdir.mkdir(parents=True, exist_ok=True)
        spec = METHOD_SPECS[cell.method]
        data = self.distilled_data(cell.decoding) if spec["data"] == "distilled" else cfg.data

        # 1. train (skipped when train.json exists; fairseq resumes from checkpoint_last.pt)
        train_json = cdir / "train.json"
        if not train_json.exists():
            log = cdir / "train.log"
            t0 = time.time()
            self.launched.append("fairseq-train")
            self.runner(train_command(cfg, cell, data, str(cdir / "checkpoints")), str(log))
            info = parse_train_log(log.read_text(encoding="utf-8", errors="replace"))
            info["train_time"] = round(time.time() - t0, 2)
            if info["parameters"] is None:
                raise RuntimeError(f"no parameter count in {log}: did fairseq-train start?")
            write_json_atomic(str(train_json), info)
        info = json.loads(train_json.read_text())
        ckpt = cdir / "checkpoints" / "checkpoint_last.pt"

        # 2. decode the test split (skipped when hyp.txt exists)
        hyp_path = cdir / "hyp.txt"
        if not hyp_path.exists():
            log = cdir / "generate.log"
            self.launched.append("fairseq-generate")
            self.runner(generate_command(cfg, cfg.data, str(ckpt)), str(log))
            hyps = parse_generate(log.read_text(encoding="utf-8", errors="replace"))
            tmp = f"{hyp_path}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(h + "\n" for h in hyps)
            os.replace(tmp, hyp_path)

        # 3. score and record
        from fairseq_kd import scoring

        score = scoring.score_files(str(hyp_path), [cfg.test_ref])
        write_json_atomic(str(cdir / "score.json"), score)
        row = dict(zip(KEY_FIELDS, cell.key()))
        row.update(parameters=info["parameters"], bleu=round(score["bleu"]["score"], 2),
                   chrf=round(score["chrf"]["score"], 2), tok_bleu=round(score["tok_bleu"]["score"], 2),
                   signature=score["bleu"]["signature"], train_time=info["train_time"], updates=info["updates"],
                   cell=cell.slug())
        curve_rows = [{**dict(zip(KEY_FIELDS, cell.key())), "updates": u, "valid_bleu": b} for u, b in info["curve"]]
        # curves first: a kill between the two writes leaves the cell unrecorded, so it reruns
        # (and its curve rows are replaced, not duplicated).
        existing = [r for r in read_csv(self.curves) if row_key(r) != cell.key()]
        write_csv_atomic(self.curves, existing + curve_rows, CURVE_FIELDS)
        append_rows_atomic(self.results, [row], RESULT_FIELDS)
        logger.info("cell %s: BLEU %.2f chrF %.2f (%s params, %s updates, %.0fs)", cell.slug(), row["bleu"],
                    row["chrf"], row["parameters"], row["updates"], row["train_time"])
        return row

