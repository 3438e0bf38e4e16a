#!/usr/bin/env bash
# Teacher -> distilled corpus -> binarized data (sequence-level KD, Kim & Rush 2016).
#   scripts/distill.sh --teacher exp/teacher/checkpoint_best.pt --data-bin data-bin/multi30k --out-dir exp/distilled
#   scripts/distill.sh ... --device cuda --fp16 --nprocs 4   # 4 workers (--part I/4, one GPU each), then --merge
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
copy_splits=valid,test   # splits copied into OUT/bin, ready for fairseq-train (all but --split)
device=auto              # auto | cpu | cuda
precision=fp32           # fp32 | fp16 | bf16 | amp (half or bfloat16 decoding on GPU; also the switches --fp16 / --bf16 / --amp)
nprocs=1                 # parallel workers (fairseq-kd-distill --part I/N, then --merge); GPU i for worker i
dry_run=false            # true: print the commands instead of running them
extra=""                 # extra flags for fairseq-kd-distill

# shellcheck source=data_prep/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../data_prep/common.sh"  # parse_flags, usage_error
# shellcheck source=scripts/hw.sh
. "$(dirname "${BASH_SOURCE[0]}")/hw.sh"  # --device / --precision / --nprocs
usage() { echo "usage: $0 --teacher CKPT --data-bin DIR --out-dir DIR [--decoding beam|greedy|sampling|teacher_forcing] [--device auto|cpu|cuda] [--fp16|--bf16|--amp] [--nprocs N] [--stage N --stop-stage N] ..." >&2; exit 2; }
hw_split_switches "$@"
parse_flags "${hw_rest[@]+"${hw_rest[@]}"}"
[[ -n "${teacher}" && -n "${data_bin}" && -n "${out_dir}" ]] || usage
hw_resolve
# the distilled split is never copied: its gold bin/ files would replace the distilled ones (the tool refuses it)
kept_copy_splits=""
IFS=, read -r -a copy_split_list <<< "${copy_splits}"
for other in "${copy_split_list[@]+"${copy_split_list[@]}"}"; do
  if [[ -n "${other}" && "${other}" != "${split}" ]]; then
    kept_copy_splits="${kept_copy_splits:+${kept_copy_splits},}${other}"
  fi
done
copy_splits="${kept_copy_splits}"

if [[ ${stage} -le 1 && ${stop_stage} -ge 1 ]]; then
  if [[ -f "${out_dir}/summary.json" && -f "${out_dir}/bin/${split}.idx.done" ]]; then
    echo "stage 1: ${out_dir} already distilled, skipping"
  else
    mkdir -p "$(dirname "${out_dir}")"
    echo "stage 1: distilling ${split} of ${data_bin} with ${teacher} (${decoding}, ${backend})"
    spm_args=()
    [[ -n "${spm_model}" ]] && spm_args=(--spm-model "${spm_model}")
    args=(--data "${data_bin}" --split "${split}" --teacher "${teacher}" --output-dir "${out_dir}"
      --decoding "${decoding}" --beam "${beam}" --nbest "${nbest}" --select "${select}" --lenpen "${lenpen}"
      --backend "${backend}" --threads "${threads}" --max-tokens "${max_tokens}" --shard-size "${shard_size}"
      --copy-splits "${copy_splits}" "${spm_args[@]}" "${hw_distill[@]}")
    if [[ "${dry_run}" == true ]]; then
      if [[ "${nprocs}" -gt 1 ]]; then
        for (( i = 0; i < nprocs; i++ )); do hw_run fairseq-kd-distill "${args[@]}" --part "${i}/${nprocs}" ${extra}; done
        args+=(--merge)
      fi
      hw_run fairseq-kd-distill "${args[@]}" ${extra}
    else
      if [[ "${nprocs}" -gt 1 ]]; then  # N workers, each its block of shards (GPU i for worker i), then the merge
        pids=()
        for (( i = 0; i < nprocs; i++ )); do
          gpu="${CUDA_VISIBLE_DEVICES:-}"
          [[ "${device}" == cuda ]] && gpu="${i}"
          # shellcheck disable=SC2086
          CUDA_VISIBLE_DEVICES="${gpu}" fairseq-kd-distill "${args[@]}" --part "${i}/${nprocs}" --no-progress ${extra} \
            > "${out_dir}.part${i}.log" 2>&1 &
          pids+=($!)
        done
        status=0
        for pid in "${pids[@]}"; do wait "${pid}" || status=1; done
        [[ ${status} -eq 0 ]] || { echo "$0: a distillation worker failed: see ${out_dir}.part*.log" >&2; exit 1; }
        args+=(--merge)
      fi
      # shellcheck disable=SC2086
      fairseq-kd-distill "${args[@]}" ${extra} > "${out_dir}.summary.tmp"
      mv "${out_dir}.summary.tmp" "${out_dir}/summary.printed.json"
      touch "${out_dir}/bin/${split}.idx.done"
    fi
  fi
fi

if [[ ${stage} -le 2 && ${stop_stage} -ge 2 && "${dry_run}" != true ]]; then
  echo "stage 2: summary of ${out_dir}"
  cat "${out_dir}/summary.json"
fi
