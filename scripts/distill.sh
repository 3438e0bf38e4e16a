#!/usr/bin/env bash
# Teacher -> distilled corpus -> binarized data (sequence-level KD, Kim & Rush 2016).
#   scripts/distill.sh --teacher exp/teacher/checkpoint_best.pt --data-bin data-bin/multi30k --out-dir exp/distilled
# Stage 1 decodes the training split with fairseq-kd-distill (sharded, resumable: re-run
# after an interruption to continue), stage 2 prints the summary. Steps whose outputs
# exist are skipped.
set -euo pipefail

# --- variables (each can be given as --name value) -----------------------------------
stage=1                  # first stage to run
stop_stage=2             # last stage to run
teacher=""               # teacher checkpoint, or several joined by ':' (ensemble)
data_bin=""              # binarized data with the teacher's dictionaries (fairseq-preprocess output)
out_dir=""               # where the distilled corpus goes (text, bin/, summary.json)
split=train              # split to distil
decoding=beam            # beam | greedy | sampling | teacher_forcing
beam=5                   # beam size
nbest=1                  # n-best kept for --select (seq-inter)
select=top               # top | sentence_bleu | chrf
lenpen=1.0               # length penalty
backend=fairseq          # fairseq | ctranslate2
threads=2                # CPU threads
max_tokens=6000          # source tokens per batch
shard_size=2000          # sentences per resumable shard
spm_model=""             # sentencepiece model (detokenized text, BLEU on text); optional
copy_splits=valid,test   # other splits copied into OUT/bin so it is ready for fairseq-train
extra=""                 # extra flags for fairseq-kd-distill

# shellcheck source=data_prep/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../data_prep/common.sh"  # parse_flags
usage() { echo "usage: $0 --teacher CKPT --data-bin DIR --out-dir DIR [--decoding beam|greedy|sampling|teacher_forcing] [--stage N --stop-stage N] ..." >&2; exit 2; }
parse_flags "$@"
[[ -n "${teacher}" && -n "${data_bin}" && -n "${out_dir}" ]] || usage

if [[ ${stage} -le 1 && ${stop_stage} -ge 1 ]]; then
  if [[ -f "${out_dir}/summary.json" && -f "${out_dir}/bin/${split}.idx.done" ]]; then
    echo "stage 1: ${out_dir} already distilled, skipping"
  else
    mkdir -p "$(dirname "${out_dir}")"
    echo "stage 1: distilling ${split} of ${data_bin} with ${teacher} (${decoding}, ${backend})"
    spm_args=()
    [[ -n "${spm_model}" ]] && spm_args=(--spm-model "${spm_model}")
    # shellcheck disable=SC2086
    fairseq-kd-distill --data "${data_bin}" --split "${split}" --teacher "${teacher}" --output-dir "${out_dir}" \
      --decoding "${decoding}" --beam "${beam}" --nbest "${nbest}" --select "${select}" --lenpen "${lenpen}" \
      --backend "${backend}" --threads "${threads}" --max-tokens "${max_tokens}" --shard-size "${shard_size}" \
      --copy-splits "${copy_splits}" "${spm_args[@]}" ${extra} > "${out_dir}.summary.tmp"
    mv "${out_dir}.summary.tmp" "${out_dir}/summary.printed.json"
    touch "${out_dir}/bin/${split}.idx.done"
  fi
fi

if [[ ${stage} -le 2 && ${stop_stage} -ge 2 ]]; then
  echo "stage 2: summary of ${out_dir}"
  cat "${out_dir}/summary.json"
fi
