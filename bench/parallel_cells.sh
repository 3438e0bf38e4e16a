#!/usr/bin/env bash
# Students side by side: the same CE cells of the main job's student (1.3M, Multi30k, beam-5 test
# decoding) run by fairseq-kd-study one at a time in process with THREADS threads (scripts/main.sh
# before --jobs) and with --jobs JOBS (subprocesses, THREADS / JOBS threads each); prints each wall
# time and the speed-up (baseline / jobs) as JSON. Run it with nothing else on the machine.
#
#   bash bench/parallel_cells.sh [--data-dir exp/main/multi30k] [--out exp/bench_parallel] [--updates 200]
#
# DATA_DIR is a prepared Multi30k (data_prep/prepare_multi30k.sh --out-dir DATA_DIR): bin/, raw/test.en.
set -euo pipefail

data_dir=exp/main/multi30k   # prepared Multi30k (bin/, raw/test.en, spm.model)
out=exp/bench_parallel       # the two studies and bench.json (removed first: each run trains anew)
updates=200                  # updates per student (validation once, at the end, as in the main job)
seeds="1 2"                  # one CE cell per seed
threads=2                    # the machine's thread budget (OMP_NUM_THREADS of both runs)
jobs=2                       # cells side by side in the second run

usage() { sed -n 2,8p "$0" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data-dir) data_dir="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --updates) updates="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "parallel_cells.sh: unknown option $1" >&2; usage ;;
  esac
done
for f in bin/dict.de.txt raw/test.en spm.model; do
  [[ -f "${data_dir}/${f}" ]] || { echo "parallel_cells.sh: ${data_dir}/${f} not found: run data_prep/prepare_multi30k.sh --out-dir ${data_dir} or pass --data-dir" >&2; exit 2; }
done
for n in updates threads jobs; do
  [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || { echo "parallel_cells.sh: --${n} must be a positive integer" >&2; exit 2; }
done
export OMP_NUM_THREADS="${threads}" MKL_NUM_THREADS="${threads}"
rm -rf "${out}"
mkdir -p "${out}"

study() {  # study OUT_SUBDIR EXTRA_FLAGS...: the main job's stage-4 command for CE students
  local dir="${out}/$1"; shift
  # shellcheck disable=SC2086  # seeds is a list
  fairseq-kd-study --data "${data_dir}/bin" -s de -t en --test-ref "${data_dir}/raw/test.en" \
    --spm-model "${data_dir}/spm.model" --out-dir "${dir}" --methods none --archs transformer_relu_3m \
    --lrs 0.003 --seeds ${seeds} --max-update "${updates}" --warmup-updates 100 --max-tokens 4096 \
    --validate-interval-updates "${updates}" --beam 5 --searches beam --quiet \
    --train-args "--share-all-embeddings --dropout 0.1 --num-workers 0 --encoder-layers 3 --decoder-layers 2 --encoder-ffn-embed-dim 256 --decoder-ffn-embed-dim 256" \
    "$@" > "${dir}.summary.json"
}

t0=$(date +%s.%N); study one_at_a_time --in-process; t1=$(date +%s.%N)
study side_by_side --jobs "${jobs}"; t2=$(date +%s.%N)

python - "${out}" "${t0}" "${t1}" "${t2}" "${threads}" "${jobs}" "${updates}" "${seeds}" <<'PY'
import csv, json, sys
out, t0, t1, t2 = sys.argv[1], *map(float, sys.argv[2:5])
threads, jobs, updates, seeds = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), sys.argv[8].split()
def bleu(name):
    return {r["seed"]: float(r["bleu"]) for r in csv.DictReader(open(f"{out}/{name}/results.csv"))}
res = {"cells": len(seeds), "updates": updates, "threads": threads, "jobs": jobs,
       "one_at_a_time_s": round(t1 - t0, 1), "side_by_side_s": round(t2 - t1, 1),
       "speedup": round((t1 - t0) / (t2 - t1), 3),
       "bleu_one_at_a_time": bleu("one_at_a_time"), "bleu_side_by_side": bleu("side_by_side")}
json.dump(res, open(f"{out}/bench.json", "w"), indent=1)
print(json.dumps(res, indent=1))
PY
