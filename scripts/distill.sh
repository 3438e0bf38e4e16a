#!/usr/bin/env bash
# Teacher -> distilled corpus -> binarized data (sequence-level KD, Kim & Rush 2016).
#   scripts/distill.sh --teacher exp/teacher/checkpoint_best.pt --data-bin data-bin/multi30k --out-dir exp/distilled
#   scripts/distill.sh ... --device cuda --fp16 --nprocs 4   # 4 workers (--part I/4, one GPU each), then --merge
# Stage 1 decodes the training split with fairseq-kd-distill (sharded, resumable: re-run
# after an interruption to continue), stage 2 prints the summary. A finished OUT is skipped only
# when it was made with the same settings (the tool's flags, teacher and data files as they are now,
# recorded in OUT/.distill_settings); otherwise the rerun reaches fairseq-kd-distill, which checks its
# shards' meta.json: it publishes again without decoding when the decoding settings are the same, and
# refuses a change (use another --out-dir, or --extra --overwrite to start over).
# --decoding sampling draws one sample per sentence (--beam 1), as fairseq-kd-study's "sampling"; an explicit
# --beam N with sampling keeps the best-scoring of N samples (said in the log): another corpus than "sampling".
set -euo pipefail

# --- variables (each can be given as --name value) -----------------------------------
stage=1                  # first stage to run
stop_stage=2             # last stage to run
teacher=""               # teacher checkpoint, or several joined by ':' (ensemble)
data_bin=""              # binarized data with the teacher's dictionaries (fairseq-preprocess output)
out_dir=""               # where the distilled corpus goes (text, bin/, summary.json)
split=train              # split to distil
decoding=beam            # beam | greedy | sampling | teacher_forcing
beam=""                  # beam size; empty: 5, and 1 for sampling (one sample per sentence, the study's; N: best of N samples)
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
extra=""                 # extra flags for fairseq-kd-distill, split as a shell would: --extra "--teacher-ct2 '/my dir/ct2'"

# shellcheck source=data_prep/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../data_prep/common.sh"  # parse_flags, usage_error
# shellcheck source=scripts/hw.sh
. "$(dirname "${BASH_SOURCE[0]}")/hw.sh"  # --device / --precision / --nprocs
usage() { echo "usage: $0 --teacher CKPT --data-bin DIR --out-dir DIR [--decoding beam|greedy|sampling|teacher_forcing] [--device auto|cpu|cuda] [--fp16|--bf16|--amp] [--nprocs N] [--stage N --stop-stage N] ..." >&2; exit 2; }
hw_split_switches "$@"
parse_flags "${hw_rest[@]+"${hw_rest[@]}"}"
[[ -n "${teacher}" && -n "${data_bin}" && -n "${out_dir}" ]] || usage
hw_resolve
split_words extra_words --extra "${extra}"  # quotes honoured: a path in --extra may hold a space
beam="$(teacher_beam "${decoding}" "${beam}")"  # sampling: one sample unless --beam N asks for the best of N
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
  spm_args=()
  [[ -n "${spm_model}" ]] && spm_args=(--spm-model "${spm_model}")
  args=(--data "${data_bin}" --split "${split}" --teacher "${teacher}" --output-dir "${out_dir}"
    --decoding "${decoding}" --beam "${beam}" --nbest "${nbest}" --select "${select}" --lenpen "${lenpen}"
    --backend "${backend}" --max-tokens "${max_tokens}" --shard-size "${shard_size}"
    --copy-splits "${copy_splits}" "${spm_args[@]}" "${hw_distill[@]}")
  # what the outputs depend on (not --threads / --nprocs): the flags, and the input files' size and mtime
  IFS=: read -r -a teacher_files <<< "${teacher}"
  settings="$(printf '%q ' fairseq-kd-distill "${args[@]}"; echo "${extra}"
    inputs_stamp "${teacher_files[@]}" "${spm_model}" "${data_bin}"/dict.*.txt "${data_bin}/${split}".*)"
  settings_file="${out_dir}/.distill_settings"
  finished=false
  [[ -f "${out_dir}/summary.json" && -f "${out_dir}/bin/${split}.idx.done" ]] && finished=true
  if [[ "${finished}" == true && -f "${settings_file}" && "$(cat "${settings_file}")" == "${settings}" ]]; then
    echo "stage 1: ${out_dir} already distilled with these settings, skipping"
  else
    mkdir -p "$(dirname "${out_dir}")"
    args+=(--threads "${threads}")
    parallel=false
    [[ "${nprocs}" -gt 1 ]] && parallel=true
    if [[ "${finished}" == true ]]; then
      echo "stage 1: ${out_dir} was distilled with other settings than these (or before ${settings_file} recorded" \
        "them): fairseq-kd-distill checks them against its shards (it publishes again without decoding, or refuses)"
      # the finished shards are in OUT/shards: one call checks them, with no worker decoding a part first
      overwrite=false
      for w in ${extra_words[@]+"${extra_words[@]}"}; do if [[ "${w}" == --overwrite ]]; then overwrite=true; fi; done
      [[ "${overwrite}" == true ]] || parallel=false
    else
      echo "stage 1: distilling ${split} of ${data_bin} with ${teacher} (${decoding}, ${backend})"
    fi
    if [[ "${dry_run}" == true ]]; then
      if [[ "${parallel}" == true ]]; then
        for (( i = 0; i < nprocs; i++ )); do
          hw_run fairseq-kd-distill "${args[@]}" --part "${i}/${nprocs}" ${extra_words[@]+"${extra_words[@]}"}
        done
        args+=(--merge)
      fi
      hw_run fairseq-kd-distill "${args[@]}" ${extra_words[@]+"${extra_words[@]}"}
    else
      # no settings file while the tool runs (a run killed once it has published must not pass for the old
      # settings); a tool that refuses or fails leaves summary.json only where OUT is still the old corpus
      # (publishing removes it first): the old settings are put back
      [[ -f "${settings_file}" ]] && mv -f "${settings_file}" "${settings_file}.old"
      keep_old_settings() {
        if [[ -f "${out_dir}/summary.json" && -f "${settings_file}.old" ]]; then mv -f "${settings_file}.old" "${settings_file}"; fi
      }
      if [[ "${parallel}" == true ]]; then  # N workers, each its block of shards (GPU i for worker i), then the merge
        pids=()
        for (( i = 0; i < nprocs; i++ )); do
          gpu="${CUDA_VISIBLE_DEVICES:-}"
          [[ "${device}" == cuda ]] && gpu="${i}"
          CUDA_VISIBLE_DEVICES="${gpu}" fairseq-kd-distill "${args[@]}" --part "${i}/${nprocs}" --no-progress \
            ${extra_words[@]+"${extra_words[@]}"} \
            > "${out_dir}.part${i}.log" 2>&1 &
          pids+=($!)
        done
        status=0
        for pid in "${pids[@]}"; do wait "${pid}" || status=1; done
        [[ ${status} -eq 0 ]] || {
          keep_old_settings; echo "$0: a distillation worker failed: see ${out_dir}.part*.log" >&2; exit 1; }
        args+=(--merge)
      fi
      fairseq-kd-distill "${args[@]}" ${extra_words[@]+"${extra_words[@]}"} > "${out_dir}.summary.tmp" || { rc=$?; keep_old_settings; exit "${rc}"; }
      mv "${out_dir}.summary.tmp" "${out_dir}/summary.printed.json"
      touch "${out_dir}/bin/${split}.idx.done"
      printf '%s\n' "${settings}" > "${settings_file}"
      rm -f "${settings_file}.old"
    fi
  fi
fi

if [[ ${stage} -le 2 && ${stop_stage} -ge 2 && "${dry_run}" != true ]]; then
  echo "stage 2: summary of ${out_dir}"
  cat "${out_dir}/summary.json"
fi
