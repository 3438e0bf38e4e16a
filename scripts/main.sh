#!/usr/bin/env bash
# The main job: Multi30k de-en, teacher -> distillation -> students -> BLEU table, on CPU.
#
#   bash scripts/main.sh --data-dir ../shared/data/multi30k     # local copy of the corpus
#   bash scripts/main.sh                                        # downloads Multi30k (needs network)
#
# Stages (--stage N --stop-stage M; each step is skipped when its output exists):
#   0 environment (scripts/setup_env.sh)      1 prepare Multi30k (sentencepiece, binarize)
#   2 train the teacher                       3 decode + score the teacher on test_2016_flickr
#   4 students (baseline CE, word-KD, seq-KD on the teacher's translations of train) through the study runner
#   5 print the table (also written to WORK_DIR/results.md)
# A killed run restarts where it stopped: fairseq-train resumes from checkpoint_last.pt and the
# study runner skips finished cells.
set -euo pipefail

# ---- options: each variable is also a --kebab-case flag ----
data_dir="${FAIRSEQ_KD_MULTI30K:-}"  # Multi30k raw files (train/val/test_2016_flickr.{de,en}); empty: download
work_dir=exp/main                     # everything this job writes
vocab_size=4000                       # joint sentencepiece vocabulary (4k: students train 2x faster than at 8k)
teacher_args="--arch transformer --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4 --encoder-normalize-before --decoder-normalize-before"  # stock fairseq transformer (CTranslate2 converts it), 6.6M parameters
teacher_updates=250                   # teacher updates of teacher_max_tokens (~1.7 epochs, ~7 min on 2 cores)
teacher_max_tokens=4096               # teacher tokens per batch
student_arch=transformer_relu_3m      # students: this ladder arch, shrunk by student_args
student_updates=280                   # updates per student (~1.5-3.5 min each)
student_args="--encoder-layers 3 --decoder-layers 2 --encoder-ffn-embed-dim 256 --decoder-ffn-embed-dim 256"  # shrink the student below the teacher
student_validate_interval=140         # validation BLEU every N updates (the BLEU-vs-updates curve)
distill_backend=ctranslate2           # fairseq-kd-distill backend for the seq-KD data (int8 on CPU; shards of 8000
                                      # sentences so its single-source-length batches are full)
methods="none word seq"               # KD methods compared (see fairseq-kd-study --methods)
decoding=greedy                       # how the teacher builds the seq-KD data (beam: 4-best beam, ~3x slower)
max_tokens=2048                       # tokens per batch
lr=0.002                              # peak learning rate (inverse_sqrt)
warmup=100                            # warmup updates
threads=2                             # CPU threads for training and decoding
stage=0                               # first stage to run
stop_stage=100                        # last stage to run

# shellcheck source=data_prep/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../data_prep/common.sh"  # parse_flags
usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
parse_flags "$@"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "[main.sh $(date +%H:%M:%S)] $*" >&2; }
run_stage() { [[ ${stage} -le $1 && $1 -le ${stop_stage} ]]; }
export OMP_NUM_THREADS="${threads}" MKL_NUM_THREADS="${threads}"
mkdir -p "${work_dir}"
prep="${work_dir}/multi30k"
teacher_dir="${work_dir}/teacher"
study_dir="${work_dir}/study"
t0=$(date +%s)

if run_stage 0; then
  log "stage 0: environment"
  bash "${repo}/scripts/setup_env.sh"
fi
# shellcheck disable=SC1091
. "${FAIRSEQ_KD_VENV:-${repo}/.venv}/bin/activate"

if run_stage 1; then
  log "stage 1: preparing Multi30k into ${prep}"
  bash "${repo}/data_prep/prepare_multi30k.sh" ${data_dir:+--data-dir "${data_dir}"} \
    --out-dir "${prep}" --vocab-size "${vocab_size}"
fi

if run_stage 2; then
  if [[ -f "${teacher_dir}/checkpoint_best.pt" && -f "${teacher_dir}/.done" ]]; then
    log "stage 2: teacher exists (${teacher_dir}/checkpoint_best.pt), skipping"
  else
    log "stage 2: training the teacher (${teacher_updates} updates)"
    # shellcheck disable=SC2086
    fairseq-train "${prep}/bin" --user-dir "${repo}/fairseq_kd" --task translation -s de -t en \
      ${teacher_args} --share-all-embeddings --dropout 0.1 \
      --optimizer adam --adam-betas '(0.9, 0.98)' --lr "${lr}" --lr-scheduler inverse_sqrt \
      --warmup-updates "${warmup}" --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
      --max-tokens "${teacher_max_tokens}" --max-update "${teacher_updates}" --save-dir "${teacher_dir}" \
      --no-epoch-checkpoints --validate-interval-updates "$(( teacher_updates / 2 ))" --save-interval-updates "$(( teacher_updates / 2 ))" \
      --keep-interval-updates 1 --cpu --num-workers 0 --seed 1 --log-format simple --log-interval 50 \
      2>&1 | tee -a "${work_dir}/teacher.log" | grep --line-buffered -E "train_inner|valid on|done training" >&2
    touch "${teacher_dir}/.done"
  fi
fi

if run_stage 3; then
  if [[ -f "${work_dir}/teacher.test.json" ]]; then
    log "stage 3: teacher already scored, skipping"
  else
    log "stage 3: teacher BLEU on test_2016_flickr"
    bash "${repo}/scripts/decode.sh" --data-bin "${prep}/bin" --checkpoint "${teacher_dir}/checkpoint_best.pt" \
      --out "${work_dir}/teacher.test.en" --spm-model "${prep}/spm.model" --decoding beam --beam 5
    fairseq-kd-score -i "${work_dir}/teacher.test.en" -r "${prep}/raw/test.en" -o "${work_dir}/teacher.test.json" >/dev/null
  fi
fi

if run_stage 4; then
  log "stage 4: students (${methods}) of ${student_arch}, ${student_updates} updates each"
  # shellcheck disable=SC2086
  fairseq-kd-study --data "${prep}/bin" -s de -t en --test-ref "${prep}/raw/test.en" \
    --spm-model "${prep}/spm.model" --teacher "${teacher_dir}/checkpoint_best.pt" --out-dir "${study_dir}" \
    --methods ${methods} --archs "${student_arch}" --decodings "${decoding}" --lrs "${lr}" --seeds 1 \
    --max-update "${student_updates}" --warmup-updates "${warmup}" --max-tokens "${max_tokens}" \
    --validate-interval-updates "${student_validate_interval}" --beam 5 --in-process \
    --train-args "--share-all-embeddings --dropout 0.1 --num-workers 0 ${student_args}" \
    --distill-args "--backend ${distill_backend} --beam 4 --threads ${threads} --shard-size 8000"
fi

if run_stage 5; then
  log "stage 5: results"
  fairseq-kd-report "${study_dir}/results.csv" --out-dir "${work_dir}/report" >/dev/null
  {
    echo "## Multi30k de-en, test_2016_flickr (sacrebleu)"
    echo
    python - "${work_dir}/teacher.test.json" "${work_dir}/teacher.log" <<'PY'
import json, re, sys
s = json.load(open(sys.argv[1]))
found = re.findall(r"num\. (?:shared )?model params: ([\d,]+)", open(sys.argv[2], errors="replace").read())
params = f"{found[-1]} parameters" if found else "parameters: see teacher.log"
print(f"Teacher ({params}): BLEU {s['bleu']['score']:.2f}, chrF {s['chrf']['score']:.2f}  ")
print(f"`{s['bleu']['signature']}`")
PY
    echo
    cat "${work_dir}/report/table.md"
  } > "${work_dir}/results.md"
  cat "${work_dir}/results.md"
  log "done in $(( $(date +%s) - t0 )) s; table in ${work_dir}/results.md, plots in ${work_dir}/report/"
fi
