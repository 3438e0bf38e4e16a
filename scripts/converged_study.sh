#!/usr/bin/env bash
# The converged study (docs/results.md section 7): every model trained until greedy valid BLEU stops
# improving (patience 8 validations x 250 updates), best checkpoint decoded on test and test1.
#
#   scripts/converged_study.sh --stage 1 --stop-stage 1                       # the teacher
#   scripts/converged_study.sh --stage 2 --stop-stage 2 --size 1m --methods none --seeds "1 2 3"
#   scripts/converged_study.sh --stage 2 --stop-stage 2 --size 7m --methods "word seq" --seeds 1 --tag laneB
#   scripts/converged_study.sh --stage 3 --stop-stage 3 --noise-op substitution --seeds 1
#   scripts/converged_study.sh --stage 4 --stop-stage 4 --student-init CE_BEST.pt --seeds "1 2 3"
#
# Stages: 1 = teacher; 2 = students of one size (none word seq hybrid word.hid); 3 = noise 0.3 of one
# op (none word word_tnoisy seq seq_tnoisy, 1.3M); 4 = on-policy / CE / word-KD continued from a CE
# student for the same --continue-updates (a fixed budget, not patience: equal updates for every method). Each run is a fairseq-kd-study out-dir OUT_ROOT/<stage>_<size|op>_<tag>: one per lane (run
# lanes with OMP_NUM_THREADS=1 and different --tag, then docs/results/tools/merge_studies.py). Runs
# resume: re-run the same command.
set -euo pipefail

# ---- options (--name value; chosen on validation where docs/results.md sections 5 and 7 show it) ---------
prep=exp/m30k           # data_prep/prepare_multi30k.sh --out-dir (bin/, raw/, spm.model; test1 = test_2017_flickr)
out_root=exp/converged  # one study out-dir per stage x size/op x tag below this
teacher=""              # teacher checkpoint for stages 2-4 (default: stage 1's checkpoint_best.pt)
size=1m                 # stage 2: 1m (main job's 1.31M student) | 7m (ladder rung transformer_relu_9m, 7.34M)
methods=""              # per stage: 2 none word seq hybrid word.hid; 3 none word word_tnoisy seq seq_tnoisy; 4 onpolicy onpolicy.l1 onpolicy.exp none word
seeds="1 2 3"           # training seeds
noise_op=substitution   # stage 3: substitution | deletion | swap (rate 0.3)
noise_copies=8          # stage 3: noisy copies of the source the noisy-source seq-KD teacher distils (copy c = epoch c's noise)
student_init=""         # stage 4: the converged CE student every run starts from
init_lr=0.0004          # stage 4 peak lr: about where the CE run's schedule ended (0.003 x sqrt(100 / 7,000))
continue_updates=2000   # stage 4: updates every run trains from --student-init (equal for every method; last checkpoint decoded)
tag=main                # lane name (part of the out-dir)
student_dropout=0.1     # students' dropout (section 5's; the 7.34M rung's is being chosen on validation, 0.1 vs 0.3: docs/results.md 7c)
teacher_dropout=0.3     # stage 1: at 0.1 the 6.55M teacher peaks at 2,000 updates below the converged 1.3M CE student
lr=0.003                # peak learning rate (section 5: 0.003 over 0.001 for the 1.3M student)
patience=8              # validations without improvement before stopping
interval=250            # updates between validations
max_update=20000        # cap (a run that reaches it is reported as "budget", not converged)
cache_topk=8            # word / hybrid read the teacher's top-8 from a cache (also under source noise, where their
                        # teacher reads the clean source); online teachers are cut to the same renormalised top-8
stage=1                 # first stage to run
stop_stage=4            # last stage to run (stage 4 needs --student-init)

. "$(dirname "${BASH_SOURCE[0]}")/../data_prep/common.sh"  # parse_flags, die, usage_error
parse_flags "$@"
[[ "${stage}" =~ ^[0-9]+$ && "${stop_stage}" =~ ^[0-9]+$ ]] || usage_error "stages are integers"
case "${size}" in 1m|7m) ;; *) usage_error "--size must be 1m or 7m (got ${size})" ;; esac
case "${noise_op}" in substitution|deletion|swap) ;; *) usage_error "--noise-op: substitution, deletion or swap" ;; esac
for f in "${prep}/bin/dict.de.txt" "${prep}/raw/test.en" "${prep}/raw/test1.en" "${prep}/spm.model"; do
  [[ -f "${f}" ]] || die "${f} not found: run data_prep/prepare_multi30k.sh --out-dir ${prep} --test-sets test_2016_flickr,test_2017_flickr"
done
if [[ ${stage} -le 4 && ${stop_stage} -ge 4 && ! -f "${student_init}" ]]; then
  usage_error "stage 4 needs --student-init (a converged CE checkpoint, e.g. stage 2's none seed-1 checkpoint_best.pt); or stop before it with --stop-stage 3"
fi

common="--share-all-embeddings --dropout ${student_dropout} --num-workers 0"
teacher_args="--share-all-embeddings --dropout ${teacher_dropout} --num-workers 0 --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4 --encoder-normalize-before --decoder-normalize-before"
declare -A arch=([1m]=transformer_relu_3m [7m]=transformer_relu_9m)
declare -A student_args=(
  [1m]="${common} --encoder-layers 3 --decoder-layers 2 --encoder-ffn-embed-dim 256 --decoder-ffn-embed-dim 256"
  [7m]="${common} --encoder-normalize-before --decoder-normalize-before")
# word.hid reads word-KD's top-8 cache (its teacher's encoder runs for the hidden states), so word.hid - word is the
# hidden-state term alone; on-policy's online teacher is cut to the same top-8 (stage 4)
method_args=("hybrid=--hybrid-weight 0.5" "word.hid=--kd-hidden-weight 1.0 --kd-hidden-loss cosine --kd-topk ${cache_topk}"
             "onpolicy=--kd-alpha 0.5 --onpolicy-lambda 0.5 --kd-topk ${cache_topk}" "onpolicy.l1=--onpolicy-lambda 1.0"
             "onpolicy.exp=--onpolicy-schedule exp")

study() {  # out_dir, then fairseq-kd-study flags
  local out=$1; shift
  echo "== $(date -u +%FT%TZ) ${out}: $*" >&2
  fairseq-kd-study --data "${prep}/bin" -s de -t en --test-ref "${prep}/raw/test.en" \
    --extra-test "test1=${prep}/raw/test1.en" --spm-model "${prep}/spm.model" --beam 5 --searches beam greedy \
    --in-process --quiet --max-tokens 4096 --max-update "${max_update}" --patience "${patience}" \
    --best-metric bleu --validate-interval-updates "${interval}" --out-dir "${out}" "$@"
}
teacher_ckpt() {
  if [[ -n "${teacher}" ]]; then echo "${teacher}"; return; fi
  local d="${out_root}/teacher_d${teacher_dropout}"
  local t=("${d}"/cells/*/checkpoints/checkpoint_best.pt)  # the directory quoted (it may hold a space), the glob not
  [[ -f "${t[0]}" && -f "${d}/results.csv" ]] || {
    die "no converged teacher in ${d}: run stage 1 to its end or pass --teacher"; }
  echo "${t[0]}"
}

teacher_flag() {  # sets kd_teacher: CE alone (--methods none) needs no teacher, so it runs beside stage 1
  kd_teacher=()
  if [[ "${methods}" != none ]]; then local t; t=$(teacher_ckpt); kd_teacher=(--teacher "${t}"); fi
}

if [[ ${stage} -le 1 && ${stop_stage} -ge 1 ]]; then
  study "${out_root}/teacher_d${teacher_dropout}" --lrs "${lr}" --methods none --archs transformer --seeds 1 --warmup-updates 300 \
    --train-args "${teacher_args}"
fi
if [[ ${stage} -le 2 && ${stop_stage} -ge 2 ]]; then
  teacher_flag
  study "${out_root}/students_${size}_${tag}" "${kd_teacher[@]}" --methods ${methods:-none word seq hybrid word.hid} \
    --lrs "${lr}" --archs "${arch[${size}]}" --seeds ${seeds} --decodings beam --warmup-updates 100 \
    --cache-topk "${cache_topk}" --cache-methods word hybrid word.hid --train-args "${student_args[${size}]}" \
    --method-args "${method_args[@]}" --distill-args "--backend ctranslate2 --shard-size 8000 --threads ${OMP_NUM_THREADS:-0}"
fi
if [[ ${stage} -le 3 && ${stop_stage} -ge 3 ]]; then
  teacher_flag
  study "${out_root}/noise_${noise_op}_${tag}" "${kd_teacher[@]}" \
    --methods ${methods:-none word word_tnoisy seq seq_tnoisy} --lrs "${lr}" --noise 0.3 --noise-ops "${noise_op}" \
    --archs "${arch[1m]}" --seeds ${seeds} --decodings beam --warmup-updates 100 --train-args "${student_args[1m]}" \
    --noise-copies "${noise_copies}" --cache-topk "${cache_topk}" --cache-methods word \
    --method-args "word=--kd-topk ${cache_topk}" "word_tnoisy=--kd-topk ${cache_topk}" \
    --distill-args "--backend ctranslate2 --shard-size 8000 --threads ${OMP_NUM_THREADS:-0}"
fi
if [[ ${stage} -le 4 && ${stop_stage} -ge 4 ]]; then
  teacher_flag
  study "${out_root}/onpolicy_${tag}" "${kd_teacher[@]}" --student-init "${student_init}" \
    --methods ${methods:-onpolicy onpolicy.l1 onpolicy.exp none word} --archs "${arch[1m]}" --seeds ${seeds} \
    --warmup-updates 100 --lrs "${init_lr}" --max-update "${continue_updates}" --patience 0 \
    --cache-topk "${cache_topk}" --cache-methods word --train-args "${student_args[1m]}" --method-args "${method_args[@]}"
fi
