#!/usr/bin/env bash
# Rehearse a converged-study lane queue on miniature data before its real jobs meet it: every job of QUEUE runs
# in order, with the same commands and code, on a few thousand Multi30k pairs and budgets of tens of updates, so a
# job that would fail after hours of its predecessors (a study that refuses its settings, a path one job expects
# from another, a choice file, an exporter stage) fails here in minutes. Numbers from it mean nothing.
#
#   docs/results/tools/rehearse_queue.sh --queue exp/lanes/queue.txt --work /tmp/reh [--lanes 1]
#
# The rewrite: "exp/converged" becomes WORK/converged everywhere in the queue (out-roots, --student-init paths,
# choice files), and each "--out-root" gains --prep WORK/m30k and the small budgets below. The rewritten queue is
# WORK/queue.txt, its states WORK/.lanes (run_lanes.sh --status 1 reads them). Then the exporter's stages run
# on WORK/converged into WORK/export. Exit 0 when every job and the export passed.
set -euo pipefail

# ---- options ---------------------------------------------------------------------------------------------
queue=""              # the lane queue to rehearse (scripts/run_lanes.sh format)
work=""               # rehearsal folder (data, studies, states); reused: done jobs are skipped on a rerun
data_dir=../shared/data/multi30k  # Multi30k raw files (train, val, test_2016_flickr, test_2017_flickr)
train_lines=3000      # training pairs kept
eval_lines=40         # valid / test / test1 sentences kept
vocab_size=600        # sentencepiece vocabulary of the miniature data
max_update=30         # every run's cap
interval=10           # updates between validations
patience=1            # validations without improvement before stopping
continue_updates=20   # stage 4's fixed budget
noise_copies=2        # stage 3's noisy copies for the noisy-source seq-KD teacher
lanes=1               # lanes of the rehearsal (its jobs run beside real lanes: keep this small)
export_stages="1 2 3 4"  # export_converged.sh stages run after the queue (empty: none)
run=1                 # 0: write WORK/queue.txt and stop (no data, no jobs)

. "$(dirname "${BASH_SOURCE[0]}")/../../../data_prep/common.sh"  # parse_flags, die, usage_error
parse_flags "$@"
[[ -n "${queue}" && -f "${queue}" ]] || usage_error "--queue QUEUE (an existing lane queue) is required"
[[ -n "${work}" ]] || usage_error "--work DIR is required"
[[ "${run}" == 0 || "${run}" == 1 ]] || usage_error "--run must be 0 or 1"
for n in train_lines eval_lines vocab_size max_update interval patience continue_updates noise_copies lanes; do
  [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || usage_error "--${n//_/-} must be a positive integer (got ${!n})"
done
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
mkdir -p "${work}/raw"
work="$(cd "${work}" && pwd)"

# ---- the rewritten queue ------------------------------------------------------------------------------------
small="--prep ${work}/m30k --max-update ${max_update} --interval ${interval} --patience ${patience}"
small+=" --continue-updates ${continue_updates} --noise-copies ${noise_copies}"
sed -e "s#--out-root exp/converged#--out-root exp/converged ${small}#g" -e "s#exp/converged#${work}/converged#g" \
  "${queue}" > "${work}/queue.tmp"
grep -q -- "--out-root ${work}/converged" "${work}/queue.tmp" || die "${queue}: no job with --out-root exp/converged to rehearse"
mv "${work}/queue.tmp" "${work}/queue.txt"
[[ "${run}" == 1 ]] || { echo "${work}/queue.txt"; exit 0; }

[[ -z "${export_stages}" ]] || python -c "import fairseq, torch" 2>/dev/null \
  || die "the export needs fairseq and torch: activate the environment first (. .venv/bin/activate)"

# ---- miniature data (once) ----------------------------------------------------------------------------------
if [[ ! -f "${work}/m30k/spm.model" ]]; then
  for l in de en; do
    [[ -f "${data_dir}/train.${l}" ]] || die "${data_dir}/train.${l} not found: pass --data-dir (Multi30k raw files)"
    head -n "${train_lines}" "${data_dir}/train.${l}" > "${work}/raw/train.${l}"
    for s in val test_2016_flickr test_2017_flickr; do
      [[ -f "${data_dir}/${s}.${l}" ]] || die "${data_dir}/${s}.${l} not found: pass --data-dir (Multi30k raw files)"
      head -n "${eval_lines}" "${data_dir}/${s}.${l}" > "${work}/raw/${s}.${l}"
    done
  done
  bash "${repo}/data_prep/prepare_multi30k.sh" --data-dir "${work}/raw" --out-dir "${work}/m30k.tmp" \
    --vocab-size "${vocab_size}" --test-sets test_2016_flickr,test_2017_flickr > "${work}/prep.log" 2>&1 \
    || die "miniature data preparation failed: see ${work}/prep.log"
  rm -rf "${work}/m30k"; mv "${work}/m30k.tmp" "${work}/m30k"
fi

# ---- run it: the jobs, then the export ---------------------------------------------------------------------
rc=0
bash "${repo}/scripts/run_lanes.sh" --queue "${work}/queue.txt" --lanes "${lanes}" --state-dir "${work}/.lanes" --poll 2 \
  > "${work}/lanes.log" 2>&1 || rc=$?
bash "${repo}/scripts/run_lanes.sh" --queue "${work}/queue.txt" --state-dir "${work}/.lanes" --status 1
failed=$(find "${work}/.lanes" -maxdepth 1 -name '*.failed' | wc -l)
for s in ${export_stages}; do
  echo "== export stage ${s}" >&2
  bash "${repo}/docs/results/tools/export_converged.sh" --stage "${s}" --stop-stage "${s}" \
    --out-root "${work}/converged" --results "${work}/export" --extra-ref "${work}/m30k/raw/test1.en" \
    > "${work}/export_${s}.log" 2>&1 \
    || { echo "export stage ${s} failed: see ${work}/export_${s}.log" >&2; rc=1; }
done
[[ ${failed} -eq 0 && ${rc} -eq 0 ]] || { echo "rehearsal: ${failed} job(s) failed (logs in ${work}/.lanes)" >&2; exit 1; }
echo "rehearsal: every job of ${queue} and the export passed (${work})"
