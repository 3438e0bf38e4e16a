"""The study harness: a grid of student trainings, each decoded, scored and recorded.

* ``methods``: the KD methods (``METHOD_SPECS``) and what each reads;
* ``config``: grid cells, the settings every cell shares (``StudyConfig``);
* ``preflight``: the checks of references, teachers and ``--student-init`` before any cell trains;
* ``commands``: the fairseq-train / fairseq-generate / fairseq-kd-distill command lines;
* ``logs``: reading fairseq's ``--log-format json`` records and ``H-`` lines;
* ``world``: the process-wide fairseq state reset before each in-process tool call;
* ``records``: results.csv / curves.csv;
* ``teachers``: the ``--teachers`` axis (names, paths, which checkpoint each is);
* ``resume``: what study.json remembers and what a resumed run may change;
* ``runner``: ``Study`` (runs and resumes the grid);
* ``processes``: how a tool's command runs: ``run_logged`` / ``run_inprocess`` / ``run_ranks``.
"""
from fairseq_kd.study.commands import (USER_DIR, check_criteria, distill_command, find_tool, generate_command,
                                       hardware_flags, method_flags, noise_flags, shared_train_flags, train_command)
from fairseq_kd.study.config import (CURVE_FIELDS, DECODINGS, DEVICES, PRECISIONS, KEY_FIELDS, METHOD_SPECS, METHODS, NO_DECODING,
                                     NOISE_OPS, RESULT_FIELDS, SEARCHES, Cell, StudyConfig, build_grid, fmt_num,
                                     row_key)
from fairseq_kd.study.logs import json_records, parse_generate, parse_train_log
from fairseq_kd.study.records import read_csv, write_csv_atomic
from fairseq_kd.study.processes import Runner, run_inprocess, run_logged
from fairseq_kd.study.runner import Study
from fairseq_kd.study.world import fresh_world

__all__ = ["USER_DIR", "check_criteria", "distill_command", "find_tool", "generate_command", "hardware_flags",
           "method_flags", "noise_flags", "shared_train_flags", "train_command", "CURVE_FIELDS", "DECODINGS",
           "KEY_FIELDS", "DEVICES", "PRECISIONS", "METHOD_SPECS", "METHODS", "NO_DECODING", "NOISE_OPS", "RESULT_FIELDS", "SEARCHES", "Cell",
           "StudyConfig", "build_grid", "fmt_num", "row_key", "json_records", "parse_generate", "parse_train_log",
           "read_csv", "write_csv_atomic", "Runner", "Study", "run_inprocess", "run_logged", "fresh_world"]
