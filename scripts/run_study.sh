#!/usr/bin/env bash
# Run a KD study grid (train / decode / score each cell) and report it.
# Thin wrapper over fairseq-kd-study (the Python runner) and fairseq-kd-report.
#
#   scripts/run_study.sh --data exp/m30k/bin --test-ref exp/m30k/raw/test.en \
#       --teacher exp/teacher/checkpoint_best.pt --out-dir exp/study \
#       --methods "none word seq" --noise "0 0.1 0.2" --archs transformer_relu_3m --seeds "1 2 3"
#
# Stages: 1 = run the grid (resumes: finished cells are skipped), 2 = table + plots.
# A killed run is resumed by running the same command again.
set -euo pipefail

# ---- inputs --------------------------------------------------------------------
data=""                 # binarized corpus (fairseq-preprocess --joined-dictionary)
src=de                  # source language suffix
tgt=en                  # target language suffix
test_ref=""             # raw reference of the decoded split (detokenized, line-aligned)
gen_subset=test         # binarized split decoded and scored
teacher=""              # teacher checkpoint (word / seq / hybrid need it)
spm_model=""            # sentencepiece model (fairseq-kd-distill's detokenized summaries)
out_dir=exp/study       # results.csv, curves.csv, cells/, report/
# ---- grid (space-separated lists) ---------------------------------------------
methods="none word"     # none word seq seq_online hybrid
noise="0"               # noise levels: per-word rate of each op in noise_ops
archs="transformer"     # student architectures (e.g. ladder names transformer_relu_3m)
decodings="beam"        # beam greedy teacher_forcing (seq / seq_online / hybrid only)
lrs="5e-4"              # peak learning rates
seeds="1"               # training seeds
# ---- noise / training / decoding ------------------------------------------------
noise_ops="deletion substitution swap"  # which ops get the noise level
max_update=2000         # updates per student
max_tokens=4096         # tokens per batch
warmup_updates=400      # inverse_sqrt warmup
validate_interval_updates=500  # validation BLEU (for the updates curve) every N updates
beam=5                  # test decoding beam (and beam distillation)
max_len_a=1.2           # output length limit a * source length + b (test, validation BLEU, distillation)
max_len_b=10            # see max_len_a
bpe=sentencepiece       # --remove-bpe ("none" for word-level corpora)
train_args=""           # extra fairseq-train flags, e.g. "--dropout 0.3 --share-all-embeddings"
in_process=false        # true or 1: run the tools inside one Python process (faster start-up); false or 0: not
# ---- stages ---------------------------------------------------------------------
stage=1                 # first stage to run
stop_stage=2            # last stage to run

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  echo "options: --data --src --tgt --test-ref --gen-subset --teacher --spm-model --out-dir --methods --noise" >&2
  echo "  --archs --decodings --lrs --seeds --noise-ops --max-update --max-tokens --warmup-updates" >&2
  echo "  --validate-interval-updates --beam --max-len-a --max-len-b --bpe --train-args --in-process --stage --stop-stage" >&2
  exit 2
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage ;;
    --*)
      name="${1#--}"; name="${name//-/_}"
      [[ $# -ge 2 ]] || { echo "run_study.sh: $1 needs a value" >&2; exit 2; }
      case "${name}" in
        data|src|tgt|test_ref|gen_subset|teacher|spm_model|out_dir|methods|noise|archs|decodings|lrs|seeds|\
        noise_ops|max_update|max_tokens|warmup_updates|validate_interval_updates|beam|max_len_a|max_len_b|bpe|train_args|in_process|\
        stage|stop_stage) printf -v "${name}" '%s' "$2" ;;
        *) echo "run_study.sh: unknown option $1" >&2; usage ;;
      esac
      shift 2 ;;
    *) echo "run_study.sh: unexpected argument $1" >&2; usage ;;
  esac
done

[[ -n "${data}" ]] || { echo "run_study.sh: --data is required" >&2; exit 2; }
[[ -n "${test_ref}" ]] || { echo "run_study.sh: --test-ref is required" >&2; exit 2; }
[[ "${stage}" =~ ^[0-9]+$ && "${stop_stage}" =~ ^[0-9]+$ ]] || { echo "run_study.sh: stages are integers" >&2; exit 2; }
case "${in_process}" in
  true|1) in_process=true ;;
  false|0) in_process=false ;;
  *) echo "run_study.sh: --in-process ${in_process}: use true or 1, false or 0" >&2; exit 2 ;;
esac
command -v fairseq-kd-study >/dev/null || { echo "run_study.sh: fairseq-kd-study not on PATH (activate the venv)" >&2; exit 2; }

log() { echo "[run_study $(date +%H:%M:%S)] $*" >&2; }
results="${out_dir}/results.csv"
report_dir="${out_dir}/report"

if [[ "${stage}" -le 1 && "${stop_stage}" -ge 1 ]]; then
  log "stage 1: grid into ${results} (finished cells are skipped)"
  opts=()
  [[ -n "${teacher}" ]] && opts+=(--teacher "${teacher}")
  [[ -n "${spm_model}" ]] && opts+=(--spm-model "${spm_model}")
  [[ "${in_process}" == true ]] && opts+=(--in-process)
  # shellcheck disable=SC2086  # the grid lists are meant to split into words
  fairseq-kd-study --data "${data}" -s "${src}" -t "${tgt}" --test-ref "${test_ref}" --gen-subset "${gen_subset}" \
    --out-dir "${out_dir}" --methods ${methods} --noise ${noise} --archs ${archs} --decodings ${decodings} \
    --lrs ${lrs} --seeds ${seeds} --noise-ops ${noise_ops} --max-update "${max_update}" \
    --max-tokens "${max_tokens}" --warmup-updates "${warmup_updates}" \
    --validate-interval-updates "${validate_interval_updates}" --beam "${beam}" --max-len-a "${max_len_a}" --max-len-b "${max_len_b}" --bpe "${bpe}" \
    --train-args "${train_args}" "${opts[@]}"
fi

if [[ "${stage}" -le 2 && "${stop_stage}" -ge 2 ]]; then
  if [[ -f "${report_dir}/table.md" && "${report_dir}/table.md" -nt "${results}" ]]; then
    log "stage 2: ${report_dir}/table.md is newer than ${results}, skipped"
  else
    log "stage 2: table and plots into ${report_dir}"
    fairseq-kd-report "${results}" --out-dir "${report_dir}" >/dev/null
  fi
  cat "${report_dir}/table.md"
fi
