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
# Stages: 1 distil, 2 train, 3 evaluate on the test split. A finished step is skipped only when
# it was made with this run's settings: stage 2 records fairseq-train's flags (all the options above that
# reach it: --kd, --lr, --kd-alpha, --hybrid-*, --max-epoch, --arch-args, precision, --extra ...), --nprocs
# and the files of the training data and the teacher (size, mtime) in EXP_DIR/train.settings, and refuses
# (exit 2) to reuse or resume a student trained with other ones, or by an earlier version that recorded
# none: use a new --exp-dir, or delete EXP_DIR/checkpoints and EXP_DIR/train.done. Training and its
# validation see every sentence (--required-batch-size-multiple 1, as the study's students).
# Stage 3 scores as the study's main job (scripts/main.sh stage 3, fairseq-kd-study): scripts/decode.sh decodes
# every test sentence of DATA_BIN (--required-batch-size-multiple 1; fairseq's default 8 drops the last
# N % 8, the longest) and writes the hypotheses in corpus order, detokenized with the data's sentencepiece model,
# to EXP_DIR/test.hyp; fairseq-kd-score scores them against the RAW reference text (--test-ref; default
# DIR/raw/test.TGT for a --data-bin DIR/bin, the layout of data_prep/*.sh; none found: exit 2 naming what to
# pass), not the reference fairseq rebuilds from the binarized target (unknown pieces there become <<unk>>):
# EXP_DIR/test.json (BLEU, chrF, tokenized BLEU, sacrebleu signatures) and EXP_DIR/test.log (those lines,
# printed). The direction is --extra's -s/-t, else DATA_BIN's test file names (as fairseq infers it).
# Detokenization (--post-process): auto = with the sentencepiece model (--spm-model, else spm.model /
# sentencepiece.model in DATA_BIN or its parent), or by the "▁" rule when DATA_BIN's dictionaries hold "▁"
# pieces but no model is found; data that is not sentencepiece-encoded is scored as the model writes it
# (said on stderr). --post-process none keeps the hypotheses' tokens as they are (for word-level data, or a
# --test-ref in the same pieces). Stage 3 decodes again when the checkpoint, the test data, the reference,
# the sentencepiece model or the decoding differ from EXP_DIR/test.log.settings.
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
exp_dir=""               # experiment dir: distilled/, checkpoints/, test.hyp, test.json, test.log
decoding=beam            # teacher decoding of the distilled corpus, or of online teacher targets (beam|greedy|sampling|teacher_forcing)
beam=""                  # beam size of the teacher; empty: 5, and 1 for sampling (one sample per sentence, the study's; N: best of N samples)
backend=fairseq          # distilled corpus: fairseq | ctranslate2 decoding
arch=transformer         # student architecture
arch_args="--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4 --share-all-embeddings --dropout 0.3"  # flags, split as a shell would: quote a path with spaces
max_epoch=30             # training epochs
max_tokens=4096          # tokens per batch
lr=5e-4                  # peak learning rate (inverse_sqrt, 4000 warmup updates)
kd_alpha=0.5             # word, onpolicy: weight of the KD term (onpolicy: on gold batches; 0.5 as converged_study.sh, the criterion's default is 1.0)
hybrid_gate=fixed        # hybrid: fixed | learned | uncertainty (fixed: the criterion's and fairseq-kd-study's default; on learned see docs/usage.md)
hybrid_weight=0.5        # hybrid: (initial) weight of the token-level term
gen_beam=5               # beam for the final test decoding
gen_max_len_a=1.2        # final test decoding: output length limit a * source length + b (the teacher's, scripts/recipes/common.sh)
gen_max_len_b=10         # see gen_max_len_a
spm_model=""             # the data's sentencepiece model (distill.sh's detokenized text; stage 3's detokenization; found beside DATA_BIN when empty)
post_process=auto        # stage 3's detokenization: auto (sentencepiece when the data is sentencepiece-encoded, see above) | sentencepiece | none (tokens as they are)
test_ref=""              # stage 3's reference: the raw target text of DATA_BIN's test split; empty: DIR/raw/test.TGT for DATA_BIN DIR/bin
distilled_dir=""         # seq / hybrid: a corpus scripts/distill.sh already made (its --out-dir): trained on DIR/bin, stage 1 not run
device=auto              # auto | cpu | cuda (auto: cuda when torch sees a GPU)
precision=fp32           # fp32 | fp16 | bf16 | amp (GPU only; also the switches --fp16 / --bf16 / --amp)
nprocs=1                 # data-parallel training processes (GPU: one per GPU; CPU: one per rank, gloo)
dry_run=false            # true: print the commands instead of running them
extra=""                 # extra flags for fairseq-train, split as a shell would: --extra "--teacher-cache '/my dir/cache'"

# shellcheck source=data_prep/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../data_prep/common.sh"  # parse_flags, usage_error
# shellcheck source=scripts/hw.sh
. "$(dirname "${BASH_SOURCE[0]}")/hw.sh"  # --device / --precision / --nprocs
usage() { echo "usage: $0 --kd METHOD --data-bin DIR --exp-dir DIR [--teacher CKPT] [--spm-model SPM] [--test-ref RAW_TEST_TGT] [--device auto|cpu|cuda] [--fp16|--bf16|--amp] [--nprocs N] [--stage N --stop-stage N] ..." >&2; exit 2; }
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
# the flag lists as words (quotes honoured: a path in them may hold a space), not split on every blank
split_words arch_words --arch-args "${arch_args}"
split_words extra_words --extra "${extra}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
user_dir="$(cd "${here}/.." && pwd)/fairseq_kd"
train_data="${data_bin}"

# stage 3's inputs, settled before any training: a run of stages 1-3 that could not score stops now, not at the end
if [[ ${stage} -le 3 && ${stop_stage} -ge 3 ]]; then
  # the direction: --extra's -s / -t (what fairseq-train reads), else the test split's file names (TEST.SRC-TGT.*)
  test_src="" test_tgt="" prev=""
  for w in ${extra_words[@]+"${extra_words[@]}"}; do
    case "${prev}" in -s|--source-lang) test_src="${w}" ;; -t|--target-lang) test_tgt="${w}" ;; esac
    case "${w}" in --source-lang=*) test_src="${w#*=}" ;; --target-lang=*) test_tgt="${w#*=}" ;; esac
    prev="${w}"
  done
  if [[ -z "${test_src}" || -z "${test_tgt}" ]]; then
    pair=""
    for f in "${data_bin}"/test.*-*.*.idx; do
      [[ -f "${f}" ]] || continue
      f="$(basename "${f}")"; f="${f#test.}"; pair="${f%%.*}"; break
    done
    if [[ "${pair}" == ?*-?* ]]; then
      test_src="${test_src:-${pair%-*}}" test_tgt="${test_tgt:-${pair#*-}}"
    elif [[ "${dry_run}" == true ]]; then
      test_src="${test_src:-SRC}" test_tgt="${test_tgt:-TGT}"
    else
      echo "$(basename "$0"): error: stage 3: no binarized test split in ${data_bin} (test.SRC-TGT.*.idx) to" \
        "decode; binarize one, or run --stop-stage 2" >&2
      exit 2
    fi
  fi
  # the raw reference: --test-ref, else the data_prep layout's DIR/raw/test.TGT beside DIR/bin
  data_abs="$(realpath -m "${data_bin}")"
  ref="${test_ref:-$(dirname "${data_abs}")/raw/test.${test_tgt}}"
  if [[ ! -f "${ref}" ]]; then
    if [[ -n "${test_ref}" ]]; then
      why="--test-ref ${test_ref} not found"
    else
      why="no --test-ref given and ${ref} (the raw reference of data_prep/*.sh's layout, DIR/raw beside DIR/bin) is not there"
    fi
    why="stage 3 scores against the raw reference text and ${why}: pass --test-ref FILE, the target side of the \
test split as plain text, one sentence per line, as DATA_BIN/test was made from it (not fairseq's rebuilt reference)"
    if [[ "${dry_run}" != true ]]; then echo "$(basename "$0"): error: ${why}" >&2; exit 2; fi
    echo "$0: --dry-run: a real run would stop here: ${why}" >&2
  fi
  # detokenization: with the data's sentencepiece model, by the "▁" rule, or none (the model's tokens as they are)
  spm_found=""
  for f in "${spm_model}" "${data_abs}"/{spm,sentencepiece}.model "$(dirname "${data_abs}")"/{spm,sentencepiece}.model; do
    [[ -n "${f}" && -f "${f}" ]] && { spm_found="${f}"; break; }
  done
  [[ -z "${spm_model}" || -n "${spm_found}" || "${dry_run}" == true || "${post_process}" == none ]] ||
    usage_error "--spm-model ${spm_model} not found"
  [[ -n "${spm_model}" && -z "${spm_found}" ]] && spm_found="${spm_model}"  # --dry-run: as given
  pieces=false
  if [[ -n "${spm_found}" ]] || { compgen -G "${data_bin}/dict.*.txt" > /dev/null &&
      grep -q $'^\xe2\x96\x81' "${data_bin}"/dict.*.txt; }; then
    pieces=true  # sentencepiece-encoded
  fi
  if [[ "${post_process}" == auto ]]; then
    post_process=none
    [[ "${pieces}" == true ]] && post_process=sentencepiece
    [[ "${post_process}" == sentencepiece ]] || echo "$0: stage 3: ${data_bin} is not sentencepiece-encoded as far as" \
      "this script sees (no --spm-model, no spm.model beside it, no ▁ pieces in its dictionaries): its hypotheses" \
      "are scored as the model writes them (--post-process sentencepiece to detokenize)" >&2
  elif [[ "${post_process}" == none && "${pieces}" == true ]]; then
    echo "$0: stage 3: --post-process none: the hypotheses stay sentencepiece pieces; ${ref} must be in the same" \
      "pieces (e.g. DIR/spm/test.${test_tgt}), else the score means nothing" >&2
  fi
  case "${post_process}" in
    sentencepiece) detok=(); [[ -z "${spm_found}" ]] || detok=(--spm-model "${spm_found}") ;;  # none: decode.sh's "▁" rule
    none) detok=(--spm-model none) ;;
  esac
fi
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
  train_args=("${train_data}" --user-dir "${user_dir}" "${kd_args[@]}" --arch "${arch}"
    ${arch_words[@]+"${arch_words[@]}"} --optimizer adam --adam-betas '(0.9, 0.98)' --lr "${lr}" --lr-scheduler inverse_sqrt
    --warmup-updates 4000 --max-tokens "${max_tokens}" --max-epoch "${max_epoch}" --save-dir "${exp_dir}/checkpoints"
    --no-epoch-checkpoints --required-batch-size-multiple 1 --log-format simple --log-interval 100 "${hw_train[@]}"
    ${extra_words[@]+"${extra_words[@]}"})  # --required-batch-size-multiple 1: fairseq's default 8 leaves the last N % 8 valid sentences unseen
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
  # the study's scoring (scripts/main.sh stage 3): decode.sh decodes every sentence, puts the hypotheses in
  # corpus order and detokenizes them; fairseq-kd-score scores them against the raw reference
  ckpt="${exp_dir}/checkpoints/checkpoint_best.pt"
  decoding_flags=(--subset test --src "${test_src}" --tgt "${test_tgt}" --decoding beam --beam "${gen_beam}"
    --max-len-a "${gen_max_len_a}" --max-len-b "${gen_max_len_b}" --max-tokens 8000 --task kd_translation)  # task: each sentence its own length limit
  dec=(bash "${here}/decode.sh" --data-bin "${data_bin}" --checkpoint "${ckpt}" --out "${exp_dir}/test.hyp"
    "${decoding_flags[@]}" ${detok[@]+"${detok[@]}"} ${hw_train[@]+-- "${hw_train[@]}"})
  score=(fairseq-kd-score -i "${exp_dir}/test.hyp" -r "${ref}" -o "${exp_dir}/test.json" --format text)
  # a derived score: made again (not refused) when the checkpoint, the test data, the reference, the
  # sentencepiece model or the decoding changed
  test_settings="$(echo "scoring=decode.sh + fairseq-kd-score, raw reference"
    stamp_flags "--cpu" "${decoding_flags[@]}" "${hw_train[@]}"
    echo "post_process=${post_process}"
    stamp_files checkpoint_file "${exp_dir}/checkpoints" checkpoint_best.pt
    stamp_files data_files "${data_bin}" 'dict.*.txt' 'test.*'
    echo "reference=$(realpath -m "${ref}")"; stamp_files ref_file "$(dirname "${ref}")" "$(basename "${ref}")"
    if [[ "${post_process}" == sentencepiece && -n "${spm_found}" ]]; then
      echo "spm=$(realpath -m "${spm_found}")"; stamp_files spm_file "$(dirname "${spm_found}")" "$(basename "${spm_found}")"
    fi)"
  if [[ -f "${exp_dir}/test.json" && -f "${exp_dir}/test.log" ]] &&
      stamp_current "${exp_dir}/test.log.settings" "${test_settings}"; then
    echo "stage 3: ${exp_dir}/test.json is of this checkpoint, data, reference and decoding, skipping"
    cat "${exp_dir}/test.log"
  else
    if [[ -f "${exp_dir}/test.log" ]]; then
      echo "stage 3: ${exp_dir}/test.log is stale ($(stamp_changes "${exp_dir}/test.log.settings" "${test_settings}")):" \
        "test BLEU again"
    else
      echo "stage 3: test BLEU"
    fi
    if [[ "${dry_run}" == true ]]; then
      hw_run "${dec[@]}"
      hw_run "${score[@]}"
    else
      rm -f "${exp_dir}/test.log.settings" "${exp_dir}/test.json"
      "${dec[@]}"
      "${score[@]}" > "${exp_dir}/test.log.tmp"
      mv "${exp_dir}/test.log.tmp" "${exp_dir}/test.log"
      printf '%s\n' "${test_settings}" > "${exp_dir}/test.log.settings"
      cat "${exp_dir}/test.log"
    fi
  fi
fi
