# The body shared by scripts/recipes/*.sh (sourced after the recipe declares its variables
# and a prepare_data function). Stages:
#   0 data (the recipe's data_prep script)      1 teacher (fairseq's standard settings)
#   2 teacher test BLEU                          3 teacher top-k cache (N workers, --part I/N + --merge)
#   4 distilled training set (N workers)         5 ladder students x KD methods (train_student.sh)
#   6 results table (work_dir/results.md)
# The methods are the study's (fairseq_kd/study/config.py, scripts/main.sh): none = CE on gold; word = word_kd
# on gold from the teacher's top-k cache of it; seq = CE on the distilled corpus; hybrid = hybrid_kd on the
# distilled corpus from the teacher's top-k cache of that corpus (stage 4 caches it after distilling).
# --dry-run true runs stage 0 (CPU data preparation) for real and prints the commands of the
# GPU stages 1-5 instead of running them. A finished step is skipped only when it was made with this
# run's settings: the teacher (stage 1) records fairseq-train's flags, --nprocs and the data files in
# WORK_DIR/teacher/train.settings and refuses (exit 2) to reuse or resume one trained with other settings
# (or by an earlier version, which recorded none): use a new --work-dir, or delete WORK_DIR/teacher. Test
# scores (stage 2's teacher/test.* and the students' test.*) are decoded again when their checkpoint, data,
# reference or decoding changed (test.log.settings); the students (stage 5) are checked by
# scripts/train_student.sh the same way, the cache by fairseq-kd-cache, the distilled corpus by scripts/distill.sh.
# Test BLEU (teacher and students) is scored as the study's: scripts/decode.sh decodes every test sentence
# (--required-batch-size-multiple 1) into DIR/test.hyp, in corpus order, detokenized with WORK_DIR/data/spm.model,
# and fairseq-kd-score scores it against the raw reference WORK_DIR/data/raw/test.TGT: DIR/test.json (BLEU,
# chrF, signatures) and DIR/test.log (the score lines). Teacher and students train with
# --required-batch-size-multiple 1 too, so that validation sees every valid sentence.
# shellcheck disable=SC2154  # the recipe declares the variables

# ---- options: each variable is also a --kebab-case flag ----
methods="none word seq hybrid"  # KD methods (none = CE baseline)
cache_topk=8                 # teacher tokens kept per position for word KD
device=auto                  # auto | cpu | cuda
precision=auto               # auto (fp16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16 | amp (also --fp16/--bf16/--amp)
nprocs=1                     # GPUs (data-parallel processes) and distillation/cache workers
dry_run=false                # true: prepare the data, print the commands of the GPU stages
stage=0                      # first stage to run (0 data ... 6 results)
stop_stage=6                 # last stage to run
max_len_a=1.2                # test decoding of teacher and students (and the teacher's validation BLEU): length <= a * source length + b
max_len_b=10                 # see max_len_a

recipe_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=data_prep/common.sh
. "${recipe_repo}/data_prep/common.sh"  # parse_flags, log, die, usage_error
# shellcheck source=scripts/hw.sh
. "${recipe_repo}/scripts/hw.sh"  # --device / --precision / --nprocs / --dry-run

# usage: the recipe's header and options, then the options every recipe shares (above).
usage() {
  local f
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  echo "options:"
  for f in "$0" "${BASH_SOURCE[0]}"; do
    awk '/^# ---- options/ { f = 1; next } f && !/^[a-z_]+=/ { exit } f' "${f}" | while IFS= read -r line; do
      printf '  --%-20s %s\n' "$(echo "${line%%=*}" | tr _ -)" "${line#*# } (default: $(echo "${line#*=}" | sed 's/ *#.*//'))"
    done
  done
}

recipe_main() {
  hw_split_switches "$@"
  parse_flags "${hw_rest[@]+"${hw_rest[@]}"}"
  hw_resolve
  split_words teacher_words --teacher-args "${teacher_args}"  # quotes honoured: a path in them may hold a space
  local m
  for m in ${methods}; do
    case "${m}" in none|word|seq|hybrid) ;; *) usage_error "--methods: unknown method '${m}' (none word seq hybrid)" ;; esac
  done
  data="${work_dir}/data"
  bin="${data}/bin"
  teacher_dir="${work_dir}/teacher"
  teacher="${teacher_dir}/checkpoint_best.pt"
  cache="${work_dir}/cache"
  distilled="${work_dir}/distilled"
  distilled_cache="${work_dir}/cache_distilled"
  user_dir="${recipe_repo}/fairseq_kd"
  mkdir -p "${work_dir}"
  run() { [[ ${stage} -le $1 && $1 -le ${stop_stage} ]]; }
  log "${recipe_name}: device ${device}, precision ${precision}, ${nprocs} process(es)$([[ "${dry_run}" == true ]] && echo ', DRY RUN')"

  if run 0; then
    log "stage 0: data into ${data}"
    prepare_data
    [[ -f "${bin}/dict.${src}.txt" ]] || die "stage 0 left no ${bin}/dict.${src}.txt"
  fi
  if run 1; then
    local teacher_train=("${bin}" --user-dir "${user_dir}" -s "${src}" -t "${tgt}"
      --task translation --arch "${teacher_arch}" --share-all-embeddings ${teacher_words[@]+"${teacher_words[@]}"}
      --eval-bleu --eval-bleu-args "{\"beam\": 5, \"max_len_a\": ${max_len_a}, \"max_len_b\": ${max_len_b}}" --eval-bleu-detok space
      --eval-bleu-remove-bpe sentencepiece --best-checkpoint-metric bleu --maximize-best-checkpoint-metric
      --save-dir "${teacher_dir}" --no-epoch-checkpoints --required-batch-size-multiple 1 --log-format json
      --log-interval 100 "${hw_train[@]}")  # batch multiple 1: fairseq's default 8 leaves N % 8 valid sentences out
    # the teacher's settings: the flags but the paths and the device, the processes (the batch) and the data files
    local settings stamp="${teacher_dir}/train.settings"
    settings="$(stamp_flags "args --user-dir --save-dir --cpu" "${teacher_train[@]}"; echo "nprocs=${nprocs}"
      stamp_files data_files "${bin}" 'dict.*.txt' 'train.*' 'valid.*')"
    if [[ -e "${teacher_dir}/train.done" || -e "${teacher_dir}/checkpoint_last.pt" ]] &&
        ! stamp_current "${stamp}" "${settings}"; then
      refuse_stale "${teacher_dir}" "${stamp}" "${settings}" \
        "fix: use a new --work-dir, or delete ${teacher_dir} to train the teacher again"
    fi
    if [[ -f "${teacher_dir}/train.done" ]]; then
      log "stage 1: teacher trained with these settings, skipping"
    else
      log "stage 1: teacher ${teacher_arch} (${teacher_reference})"
      if [[ "${dry_run}" != true ]]; then  # recorded before training: a resumed run is checked too
        mkdir -p "${teacher_dir}"
        printf '%s\n' "${settings}" > "${stamp}"
      fi
      fairseq_train_n "${work_dir}/teacher.log" "${teacher_train[@]}"
      [[ "${dry_run}" == true ]] || touch "${teacher_dir}/train.done"
    fi
  fi
  if run 2; then
    log "stage 2: teacher test BLEU (expected: ${teacher_expected})"
    evaluate "${bin}" "${teacher}" "${teacher_dir}/test.log"
  fi
  if run 3 && [[ " ${methods} " == *" word "* ]]; then
    log "stage 3: teacher top-${cache_topk} cache of train and valid (${nprocs} worker(s))"
    teacher_cache "${bin}" "${cache}"
  fi
  if run 4 && [[ " ${methods} " == *" seq "* || " ${methods} " == *" hybrid "* ]]; then
    log "stage 4: distilled training set (beam 5)"
    bash "${recipe_repo}/scripts/distill.sh" --teacher "${teacher}" --data-bin "${bin}" --out-dir "${distilled}" \
      --spm-model "${data}/spm.model" --device "${device}" --precision "${precision}" --nprocs "${nprocs}" \
      --dry-run "${dry_run}" --stop-stage 1
    if [[ " ${methods} " == *" hybrid "* ]]; then  # hybrid's token-level term: the teacher on the distilled targets
      log "stage 4: teacher top-${cache_topk} cache of the distilled train and valid (${nprocs} worker(s))"
      teacher_cache "${distilled}/bin" "${distilled_cache}"
    fi
  fi
  if run 5; then
    local arch method
    for arch in ${students}; do
      for method in ${methods}; do
        log "stage 5: student ${arch}, KD ${method}"
        student "${arch}" "${method}"
      done
    done
  fi
  if run 6 && [[ "${dry_run}" != true ]]; then
    log "stage 6: ${work_dir}/results.md"
    {
      echo "| system | test BLEU (sacrebleu, raw reference ${data}/raw/test.${tgt}) | chrF |"
      echo "|---|---|---|"
      echo "| teacher ${teacher_arch} (expected: ${teacher_expected}) | $(score_of "${teacher_dir}/test.json") |"
      for arch in ${students}; do
        for method in ${methods}; do
          echo "| ${arch} ${method} | $(score_of "${work_dir}/students/${arch}_${method}/test.json") |"
        done
      done
      echo
      echo "BLEU signature: $(score_of "${teacher_dir}/test.json" signature)"
    } > "${work_dir}/results.md"
    cat "${work_dir}/results.md"
  fi
}

# cache_dtype: the cache's teacher compute dtype follows the training precision.
cache_dtype() {
  case "${precision}" in bf16) echo bf16 ;; fp16|amp) echo fp16 ;; *) echo fp32 ;; esac
}

# teacher_cache BIN OUT: the teacher's top-k of BIN's train and valid splits into OUT (nprocs workers, then --merge).
teacher_cache() {
  local cache_args=("$1" -s "${src}" -t "${tgt}" --teacher-path "${teacher}" --out-dir "$2"
    --split train --split valid --topk "${cache_topk}" --dtype "$(cache_dtype)" --no-progress)
  [[ "${device}" == cpu ]] && cache_args+=(--device cpu)
  if [[ "${nprocs}" -gt 1 ]]; then
    workers fairseq-kd-cache "${cache_args[@]}"
    hw_run fairseq-kd-cache "${cache_args[@]}" --merge
  else
    hw_run fairseq-kd-cache "${cache_args[@]}"
  fi
}

# workers CMD ARGS...: CMD --part I/N for I = 0..N-1 side by side (GPU I for worker I), waits for all.
workers() {
  local i pids=() status=0 pid
  for (( i = 0; i < nprocs; i++ )); do
    if [[ "${dry_run}" == true ]]; then
      hw_run "$@" --part "${i}/${nprocs}"
      continue
    fi
    CUDA_VISIBLE_DEVICES="$([[ "${device}" == cuda ]] && echo "${i}" || echo "${CUDA_VISIBLE_DEVICES:-}")" \
      "$@" --part "${i}/${nprocs}" > "${work_dir}/$(basename "$1").part${i}.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "${pid}" || status=1; done
  [[ ${status} -eq 0 ]] || die "a $(basename "$1") worker failed: see ${work_dir}/$(basename "$1").part*.log"
}

# evaluate BIN CKPT LOG: beam-5 test decoding (--max-len-a/b as the students') scored as the study's and
# scripts/train_student.sh's stage 3: scripts/decode.sh decodes every sentence of BIN's test split into
# DIR/test.hyp (corpus order, detokenized with the data's spm.model), fairseq-kd-score scores it against the raw
# reference data/raw/test.TGT into DIR/test.json and LOG (DIR/test.log, the score lines); made again when the
# checkpoint, data, reference or decoding differ from LOG.settings.
evaluate() {
  local dir base ref="${data}/raw/test.${tgt}" spm="${data}/spm.model"
  dir="$(dirname "$3")"; base="${3%.log}"
  if [[ ! -f "${ref}" ]]; then
    [[ "${dry_run}" == true ]] || { echo "$(basename "$0"): error: no raw test reference ${ref} to score against:" \
      "stage 0 (the data script) writes it; run --stage 0 first" >&2; exit 2; }
    log "--dry-run: a real run would stop here: no raw test reference ${ref}"
  fi
  local flags=(--subset test --src "${src}" --tgt "${tgt}" --decoding beam --beam 5 --max-len-a "${max_len_a}"
    --max-len-b "${max_len_b}" --max-tokens 8000 --task kd_translation --spm-model "${spm}")
  local dec=(bash "${recipe_repo}/scripts/decode.sh" --data-bin "$1" --checkpoint "$2" --out "${base}.hyp" "${flags[@]}"
    ${hw_train[@]+-- "${hw_train[@]}"})
  local score=(fairseq-kd-score -i "${base}.hyp" -r "${ref}" -o "${base}.json" --format text)
  local settings
  settings="$(echo "scoring=decode.sh + fairseq-kd-score, raw reference"
    stamp_flags "--cpu --spm-model" "${flags[@]}" "${hw_train[@]}"
    stamp_files checkpoint_file "$(dirname "$2")" "$(basename "$2")"; stamp_files data_files "$1" 'dict.*.txt' 'test.*'
    stamp_files ref_file "$(dirname "${ref}")" "$(basename "${ref}")"
    stamp_files spm_file "$(dirname "${spm}")" "$(basename "${spm}")")"
  if [[ "${dry_run}" == true ]]; then
    hw_run "${dec[@]}"
    hw_run "${score[@]}"
  elif [[ -f "$3" && -f "${base}.json" ]] && stamp_current "$3.settings" "${settings}"; then
    log "$3 is of this checkpoint, data, reference and decoding, skipping"
  else
    [[ ! -f "$3" ]] || log "$3 is stale ($(stamp_changes "$3.settings" "${settings}")): decoding again"
    rm -f "$3.settings" "${base}.json"
    mkdir -p "${dir}"
    "${dec[@]}"
    "${score[@]}" > "$3.tmp"
    mv "$3.tmp" "$3"
    printf '%s\n' "${settings}" > "$3.settings"
    cat "$3"
  fi
}

# student ARCH METHOD: one ladder student through scripts/train_student.sh.
student() {
  local arch="$1" method="$2" args
  args=(--exp-dir "${work_dir}/students/${arch}_${method}" --arch "${arch}" --arch-args "--share-all-embeddings"
    --max-epoch "${student_max_epoch}" --max-tokens "${student_max_tokens}" --lr "${student_lr}"
    --spm-model "${data}/spm.model" --device "${device}" --precision "${precision}" --nprocs "${nprocs}"
    --dry-run "${dry_run}" --stage 2 --gen-beam 5 --gen-max-len-a "${max_len_a}" --gen-max-len-b "${max_len_b}"
    --test-ref "${data}/raw/test.${tgt}" --extra "-s ${src} -t ${tgt}")  # seq's data is distilled/bin: the reference is named
  case "${method}" in
    none) args+=(--kd none --data-bin "${bin}") ;;
    seq) args+=(--kd none --data-bin "${distilled}/bin") ;;  # CE on the distilled corpus (its test split is the original)
    word) args+=(--kd word --teacher "${teacher}" --data-bin "${bin}" --kd-alpha 0.5
            --extra "-s ${src} -t ${tgt} --teacher-cache $(quote_word "${cache}")") ;;  # quoted: WORK_DIR may hold a space
    # the study's hybrid (main.sh's): hybrid_kd on the distilled corpus, its token-level term from the top-k cache
    hybrid) args+=(--kd hybrid --teacher "${teacher}" --data-bin "${bin}" --distilled-dir "${distilled}"
              --extra "-s ${src} -t ${tgt} --teacher-cache $(quote_word "${distilled_cache}")") ;;
  esac
  bash "${recipe_repo}/scripts/train_student.sh" "${args[@]}"
}

# score_of JSON [signature]: "BLEU | chrF" of a fairseq-kd-score JSON (or BLEU's signature), "not run" without one.
score_of() {
  if [[ ! -f "$1" ]]; then [[ $# -gt 1 ]] && echo "not run" || echo "not run | not run"; return 0; fi
  "$(pick_python)" -c 'import json, sys
s = json.load(open(sys.argv[1], encoding="utf-8"))
print(s["bleu"]["signature"] if sys.argv[2:] else "%.2f | %.2f" % (s["bleu"]["score"], s["chrf"]["score"]))' "$@"
}
