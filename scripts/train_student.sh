#!/usr/bin/env bash
# Train a student end to end from a trained teacher, with the KD method of your choice.
#   scripts/train_student.sh --kd seq    --teacher exp/teacher/checkpoint_best.pt --data-bin exp/m30k/bin --spm-model exp/m30k/spm.model --exp-dir exp/student_seq
#   scripts/train_student.sh --kd hybrid_online --teacher exp/teacher/checkpoint_best.pt --data-bin exp/m30k/bin --spm-model exp/m30k/spm.model --exp-dir exp/student_hybrid
#   scripts/train_student.sh --kd word ... --device cuda --bf16 --nprocs 4     # 4 GPUs, bf16 (teacher in bf16 too)
# --kd takes the study's methods (fairseq_kd/study/config.py METHOD_SPECS: criterion, data, teacher,
# flags; `python -m fairseq_kd.methods --list`): none: CE on gold; word: word_kd (online teacher);
# seq: CE on fairseq-kd-distill's offline corpus; hybrid: hybrid_kd on that corpus; hybrid_online:
# hybrid_kd on teacher targets made online (memoized under the save dir); seq_online: seq_kd;
# onpolicy: onpolicy_kd. Methods on the distilled corpus run scripts/distill.sh in stage 1. The *_tnoisy
# methods are refused: they need source noise, which fairseq-kd-study (scripts/run_study.sh) adds.
# Stages: 1 distil, 2 train, 3 evaluate on the test split (sacrebleu). A finished step is skipped only when
# it was made with this run's settings: stage 2 records fairseq-train's flags (all the options above that
# reach it: --kd, --lr, --kd-alpha, --hybrid-*, --max-epoch, --arch-args, precision, --extra ...), --nprocs
# and the files of the training data and the teacher (size, mtime) in EXP_DIR/train.settings, and refuses
# (exit 2) to reuse or resume a student trained with other ones, or by an earlier version that recorded
# none: use a new --exp-dir, or delete EXP_DIR/checkpoints and EXP_DIR/train.done. Stage 3 decodes again
# when the checkpoint, the test data or the decoding differ from EXP_DIR/test.log.settings.
# Stage 3's BLEU is on detokenized text, as the study's: fairseq-generate --post-process sentencepiece when the
# data is sentencepiece-encoded (--spm-model given, a spm.model / sentencepiece.model in DATA_BIN or its parent,
# or "▁" pieces in DATA_BIN's dictionaries; --post-process none scores the pieces, about 2.7 BLEU lower).
# --decoding sampling draws one sample per sentence (beam 1), as fairseq-kd-study's "sampling"; an explicit
# --beam N with sampling keeps the best of N samples (said in the log).
# Not the study's recipe: stage 3 decodes EXP_DIR/checkpoints/checkpoint_best.pt, best by validation loss
# (fairseq-kd-study decodes checkpoint_last.pt after a fixed --max-update, or checkpoint_best.pt by greedy
# valid BLEU under --patience), and this script's defaults are its own: --max-epoch 30, 4000 warmup updates
# (the study: --max-update 2000, 400), --arch transformer with the 3+3-layer d256 --arch-args below and
# dropout 0.3 (the study: the arch's own sizes and dropout; fairseq's transformer is 6+6 d512). Same method,
# other numbers: compare a train_student.sh student with the study's tables only with these set alike.
set -euo pipefail

# --- variables (each can be given as --name value) -----------------------------------
stage=1                  # first stage to run
stop_stage=3             # last stage to run
kd=seq                   # a METHOD_SPECS method: none | word | seq | seq_online | hybrid | hybrid_online | onpolicy
teacher=""               # teacher checkpoint (not needed for --kd none)
data_bin=""              # binarized data with the teacher's dictionaries
exp_dir=""               # experiment dir: distilled/, checkpoints/, test.log
decoding=beam            # teacher decoding of the distilled corpus, or of online teacher targets (beam|greedy|sampling|teacher_forcing)
beam=""                  # beam size of the teacher; empty: 5, and 1 for sampling (one sample per sentence, the study's; N: best of N samples)
backend=fairseq          # distilled corpus: fairseq | ctranslate2 decoding
arch=transformer         # student architecture
arch_args="--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4 --share-all-embeddings --dropout 0.3"
max_epoch=30             # training epochs
max_tokens=4096          # tokens per batch
lr=5e-4                  # peak learning rate (inverse_sqrt, 4000 warmup updates)
kd_alpha=0.5             # word, onpolicy: weight of the KD term (onpolicy: on gold batches; 0.5 as converged_study.sh, the criterion's default is 1.0)
hybrid_gate=fixed        # hybrid: fixed | learned | uncertainty (fixed: the criterion's and fairseq-kd-study's default; on learned see docs/usage.md)
hybrid_weight=0.5        # hybrid: (initial) weight of the token-level term
gen_beam=5               # beam for the final test decoding
gen_max_len_a=1.2        # final test decoding: output length limit a * source length + b (the teacher's, scripts/recipes/common.sh)
gen_max_len_b=10         # see gen_max_len_a
spm_model=""             # the data's sentencepiece model (distill.sh's detokenized text; found beside DATA_BIN when empty, for stage 3)
post_process=auto        # stage 3's BLEU: auto (sentencepiece when the data is sentencepiece-encoded, see above) | sentencepiece | none (pieces)
distilled_dir=""         # seq / hybrid: a corpus scripts/distill.sh already made (its --out-dir): trained on DIR/bin, stage 1 not run
device=auto              # auto | cpu | cuda (auto: cuda when torch sees a GPU)
precision=fp32           # fp32 | fp16 | bf16 | amp (GPU only; also the switches --fp16 / --bf16 / --amp)
nprocs=1                 # data-parallel training processes (GPU: one per GPU; CPU: one per rank, gloo)
dry_run=false            # true: print the commands instead of running them
extra=""                 # extra flags for fairseq-train

# shellcheck source=data_prep/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../data_prep/common.sh"  # parse_flags, usage_error
# shellcheck source=scripts/hw.sh
. "$(dirname "${BASH_SOURCE[0]}")/hw.sh"  # --device / --precision / --nprocs
usage() { echo "usage: $0 --kd METHOD --data-bin DIR --exp-dir DIR [--teacher CKPT] [--spm-model SPM] [--device auto|cpu|cuda] [--fp16|--bf16|--amp] [--nprocs N] [--stage N --stop-stage N] ..." >&2; exit 2; }
hw_split_switches "$@"
parse_flags "${hw_rest[@]+"${hw_rest[@]}"}"
hw_resolve
[[ -n "${data_bin}" && -n "${exp_dir}" ]] || usage
# the *_tnoisy methods need source noise (the teacher reads the student's noisy source), which this script
# does not add: here they would train their clean-teacher method (seq_tnoisy: plain seq, no noisy copies)
[[ "${kd}" != *_tnoisy ]] || usage_error "--kd ${kd}: the *_tnoisy methods need source noise, which train_student.sh \
does not add (it would train the clean-teacher method); run them with fairseq-kd-study (scripts/run_study.sh \
--methods ${kd} --noise LEVELS)"
# the method -> criterion mapping has one home: the study's METHOD_SPECS
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
spec="$(PYTHONPATH="${repo}${PYTHONPATH:+:${PYTHONPATH}}" "${python:-python3}" -m fairseq_kd.methods "${kd}")" ||
  { echo "$0: --kd ${kd} is not a method" >&2; exit 2; }
eval "${spec}"  # method_criterion, method_data (corpus|distilled), method_teacher (true|false), method_flags
[[ "${method_teacher}" == false && "${method_data}" == corpus || -n "${teacher}" ]] || {
  echo "$0: --kd ${kd} needs --teacher" >&2; exit 2; }

beam="$(teacher_beam "${decoding}" "${beam}")"  # sampling: one sample unless --beam N asks for the best of N
[[ -z "${distilled_dir}" || "${method_data}" == distilled ]] ||
  usage_error "--distilled-dir is for the methods trained on the distilled corpus (seq, hybrid), not --kd ${kd}"
case "${post_process}" in auto|sentencepiece|none) ;; *) usage_error "--post-process ${post_process}: auto, sentencepiece or none" ;; esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
user_dir="$(cd "${here}/.." && pwd)/fairseq_kd"
train_data="${data_bin}"
mkdir -p "${exp_dir}"

if [[ ${stage} -le 1 && ${stop_stage} -ge 1 && "${method_data}" == distilled && -z "${distilled_dir}" ]]; then
  echo "stage 1: offline distilled corpus"
  "${here}/distill.sh" --teacher "${teacher}" --data-bin "${data_bin}" --out-dir "${exp_dir}/distilled" \
    --decoding "${decoding}" --beam "${beam}" --backend "${backend}" --spm-model "${spm_model}" \
    --device "${device}" --precision "${precision}" --nprocs "${nprocs}" --dry-run "${dry_run}"
fi
[[ "${method_data}" == distilled ]] && train_data="${distilled_dir:-${exp_dir}/distilled}/bin"

if [[ ${stage} -le 2 && ${stop_stage} -ge 2 ]]; then
  kd_args=(--criterion "${method_criterion}" --label-smoothing 0.1 ${method_flags[@]+"${method_flags[@]}"})
  if [[ "${method_teacher}" == true ]]; then
    kd_args=(--task kd_translation --teacher-path "${teacher}" "${kd_args[@]}")
  else
    kd_args=(--task translation "${kd_args[@]}")
  fi
  case "${method_criterion}" in  # this script's knobs of each criterion
    word_kd|onpolicy_kd) kd_args+=(--kd-alpha "${kd_alpha}") ;;  # every criterion with --kd-alpha
    hybrid_kd) kd_args+=(--hybrid-gate "${hybrid_gate}" --hybrid-weight "${hybrid_weight}") ;;
  esac
  if [[ "${method_criterion}" == seq_kd || "${method_criterion}" == hybrid_kd && "${method_data}" == corpus ]]; then
    kd_args+=(--seq-kd-decoding "${decoding}" --seq-kd-beam "${beam}")  # teacher targets made online
  fi
  # shellcheck disable=SC2206  # arch_args and extra are flag lists
  train_args=("${train_data}" --user-dir "${user_dir}" "${kd_args[@]}" --arch "${arch}"
    ${arch_args} --optimizer adam --adam-betas '(0.9, 0.98)' --lr "${lr}" --lr-scheduler inverse_sqrt
    --warmup-updates 4000 --max-tokens "${max_tokens}" --max-epoch "${max_epoch}" --save-dir "${exp_dir}/checkpoints"
    --no-epoch-checkpoints --log-format simple --log-interval 100 "${hw_train[@]}" ${extra})
  # what the student is made of: the flags but the paths and the device, the processes (the batch), and the
  # training data and the teacher (the files: a re-distilled corpus or a retrained teacher is another student)
  train_settings="$(stamp_flags "args --user-dir --save-dir --teacher-path --cpu" "${train_args[@]}"
    echo "nprocs=${nprocs}"
    stamp_files data_files "${train_data}" 'dict.*.txt' 'train.*' 'valid.*'
    if [[ "${method_teacher}" == true ]]; then
      IFS=: read -r -a teacher_files <<< "${teacher}"
      for t in "${teacher_files[@]}"; do
        t="$(realpath -m "${t}")"
        echo "teacher=${t}"; stamp_files teacher_file "$(dirname "${t}")" "$(basename "${t}")"
      done
    fi)"
  train_stamp="${exp_dir}/train.settings"
  if [[ -e "${exp_dir}/train.done" || -e "${exp_dir}/checkpoints/checkpoint_last.pt" ]] &&
      ! stamp_current "${train_stamp}" "${train_settings}"; then
    refuse_stale "${exp_dir}" "${train_stamp}" "${train_settings}" "fix: use a new --exp-dir, or delete \
${exp_dir}/checkpoints and ${exp_dir}/train.done to train it again"
  fi
  if [[ -f "${exp_dir}/checkpoints/checkpoint_last.pt" && -f "${exp_dir}/train.done" ]]; then
    echo "stage 2: ${exp_dir} already trained with these settings, skipping"
  else
    echo "stage 2: training the student (--kd ${kd}) on ${train_data}"
    # recorded before training: a resumed run is checked too
    [[ "${dry_run}" == true ]] || printf '%s\n' "${train_settings}" > "${train_stamp}"
    fairseq_train_n "${exp_dir}/train.log" "${train_args[@]}"
    [[ "${dry_run}" == true ]] || touch "${exp_dir}/train.done"
  fi
fi

if [[ ${stage} -le 3 && ${stop_stage} -ge 3 ]]; then
  # BLEU on detokenized text, as the study's (its hypotheses are --remove-bpe sentencepiece): fairseq's
  # sentencepiece post-processing needs no model, only to know that the data is sentencepiece-encoded
  if [[ "${post_process}" == auto ]]; then
    post_process=none
    data_abs="$(realpath -m "${data_bin}")"
    for f in "${spm_model}" "${data_abs}"/{spm,sentencepiece}.model "$(dirname "${data_abs}")"/{spm,sentencepiece}.model; do
      [[ -n "${f}" && -f "${f}" ]] && { post_process=sentencepiece; break; }
    done
    if [[ "${post_process}" == none ]] && compgen -G "${data_bin}/dict.*.txt" > /dev/null &&
        grep -q $'^\xe2\x96\x81' "${data_bin}"/dict.*.txt; then
      post_process=sentencepiece  # "▁" pieces: sentencepiece-encoded, no model beside it
    fi
    [[ "${post_process}" == sentencepiece ]] || echo "$0: stage 3: ${data_bin} is not sentencepiece-encoded as far as" \
      "this script sees (no --spm-model, no spm.model beside it, no ▁ pieces in its dictionaries): BLEU on its" \
      "tokens as they are (--post-process sentencepiece to detokenize)" >&2
  fi
  post=()
  [[ "${post_process}" == sentencepiece ]] && post=(--post-process sentencepiece)
  gen=(fairseq-generate "${data_bin}" --user-dir "${user_dir}" --path "${exp_dir}/checkpoints/checkpoint_best.pt"
    --gen-subset test --beam "${gen_beam}" --max-len-a "${gen_max_len_a}" --max-len-b "${gen_max_len_b}"
    --max-tokens 8000 --scoring sacrebleu "${post[@]}" "${hw_train[@]}")
  # a derived score: decoded again (not refused) when the checkpoint, the test data or the decoding changed
  test_settings="$(stamp_flags "args --user-dir --path --cpu" "${gen[@]}"
    stamp_files checkpoint_file "${exp_dir}/checkpoints" checkpoint_best.pt
    stamp_files data_files "${data_bin}" 'dict.*.txt' 'test.*')"
  if [[ -f "${exp_dir}/test.log" ]] && stamp_current "${exp_dir}/test.log.settings" "${test_settings}"; then
    echo "stage 3: ${exp_dir}/test.log is of this checkpoint, data and decoding, skipping"
  else
    if [[ -f "${exp_dir}/test.log" ]]; then
      echo "stage 3: ${exp_dir}/test.log is stale ($(stamp_changes "${exp_dir}/test.log.settings" "${test_settings}")):" \
        "test BLEU again"
    else
      echo "stage 3: test BLEU"
    fi
    if [[ "${dry_run}" == true ]]; then
      hw_run "${gen[@]}"
    else
      rm -f "${exp_dir}/test.log.settings"
      "${gen[@]}" > "${exp_dir}/test.log.tmp"
      mv "${exp_dir}/test.log.tmp" "${exp_dir}/test.log"
      printf '%s\n' "${test_settings}" > "${exp_dir}/test.log.settings"
      tail -n 1 "${exp_dir}/test.log"
    fi
  fi
fi
