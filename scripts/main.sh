#!/usr/bin/env bash
# The main job: Multi30k de-en, teacher -> distillation -> students -> significance table.
#
#   bash scripts/main.sh --data-dir ../shared/data/multi30k                  # --preset full (36 min on an idle 2-core Intel VM; 59 on an AMD one, students 2 at a time)
#   bash scripts/main.sh --data-dir ../shared/data/multi30k --preset quick   # a <= 15-minute smoke run
#   bash scripts/main.sh ... --device cuda --bf16 --nprocs 2                  # GPU, mixed precision, 2 training processes
#
# Stages (--stage N --stop-stage M; a finished step is skipped when it was made with this run's settings):
#   0 environment (scripts/setup_env.sh)      1 prepare Multi30k (sentencepiece, binarize)
#   2 train the teacher (or take --teacher-checkpoint)
#   3 teacher BLEU (beam 5) on valid and test_2016_flickr
#   4 students CE / word-KD / seq-KD / hybrid of one size and one budget, 3 seeds each (the study runner);
#     seq-KD data = the teacher's beam translations of train; word-KD and hybrid read the teacher's top-k
#     from a cache built once (fairseq-kd-cache), so a KD student costs what a CE student costs;
#     every student decoded with beam 5
#   5 the table: mean +/- std over seeds, each KD method against CE (paired bootstrap over the test
#     sentences, seed-averaged BLEU), stage wall times (also WORK_DIR/results.md)
# A killed run restarts where it stopped: fairseq-train resumes from checkpoint_last.pt and the
# study runner skips finished cells. A rerun in the same --work-dir is checked against what is there:
# WORK_DIR/teacher/.settings records the teacher's fairseq-train flags, processes and data files (or the
# --teacher-checkpoint file); other settings (--preset, --teacher-*, --nprocs, precision, data, another
# teacher) are refused with exit 2 (use a new --work-dir, or delete WORK_DIR/teacher), as is a teacher
# dir of an earlier version, which recorded none. teacher.SPLIT.json is decoded again when its teacher,
# data or decoding differ from teacher.SPLIT.json.settings; the study (stage 4) checks its own cells.
# The teacher budget was read off a validation curve whose log was not kept (docs/results.md section 1);
# the students' 300 updates are a time budget, not a converged choice.
set -euo pipefail

# ---- options: each variable is also a --kebab-case flag ----
preset=full                           # full (the reported run) | quick (smoke run: small budgets, numbers not meaningful)
data_dir="${FAIRSEQ_KD_MULTI30K:-}"   # Multi30k raw files (train/val/test_2016_flickr.{de,en}); empty: download
work_dir=exp/main                     # everything this job writes
vocab_size=4000                       # joint sentencepiece vocabulary
teacher_args="--arch transformer --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4 --encoder-normalize-before --decoder-normalize-before"  # stock fairseq transformer, 6.55M parameters (flags, split as a shell would: quote a path with spaces)
teacher_updates=""                    # teacher updates (default by preset: full 750, quick 100)
teacher_max_tokens=4096               # teacher tokens per batch (per process)
teacher_lr=0.003                      # teacher peak learning rate (inverse_sqrt)
teacher_warmup=300                    # teacher warmup updates
teacher_checkpoint=""                 # an already trained teacher (same data and dictionary): skips stage 2
student_arch=transformer_relu_3m      # students: this ladder arch, shrunk by student_args
student_args="--encoder-layers 3 --decoder-layers 2 --encoder-ffn-embed-dim 256 --decoder-ffn-embed-dim 256"  # 1.3M parameters
student_updates=""                    # updates per student (default by preset: full 300, quick 50)
student_max_tokens=4096               # student tokens per batch (per process)
student_lr=0.003                      # student peak learning rate (inverse_sqrt)
student_warmup=100                    # student warmup updates
methods="none word seq hybrid"        # KD methods compared with the CE baseline none (fairseq-kd-study --methods)
hybrid_weight=0.5                     # hybrid: fixed gate g (g * word-level KL + (1 - g) * CE on the distilled data)
decoding=""                           # how the teacher translates train for seq-KD / hybrid (default by preset: full beam 5, quick greedy)
distill_backend=ctranslate2           # fairseq-kd-distill backend for the seq-KD data (int8 on CPU)
searches="beam"                      # test decodings of every student ("beam greedy" for both)
seeds=""                              # student seeds (default by preset: full "1 2 3", quick "1"); mean +/- std
cache_topk=8                          # word-KD / hybrid read the teacher's top-k from a cache (0: teacher online)
device=auto                           # auto | cpu | cuda
precision=fp32                        # fp32 | fp16 | bf16 | amp (GPU only; also --fp16 / --bf16 / --amp)
nprocs=1                              # training processes (CPU: one per rank, gloo; GPU: fairseq's spawn)
threads=2                             # CPU threads per process for the teacher, distillation and caches
jobs=2                                # students trained side by side on CPU (fairseq-kd-study --jobs), threads/jobs threads each; 1: one at a time, in process
stage=0                               # first stage to run
stop_stage=100                        # last stage to run

# shellcheck source=data_prep/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../data_prep/common.sh"  # parse_flags, log, die, usage_error
args=()
for a in "$@"; do  # value-less precision switches
  case "${a}" in --fp16|--bf16|--amp) precision="${a#--}" ;; *) args+=("${a}") ;; esac
done
parse_flags "${args[@]+"${args[@]}"}"
case "${preset}" in
  full) : "${teacher_updates:=750}" "${student_updates:=300}" "${decoding:=beam}" "${seeds:=1 2 3}" ;;
  quick) : "${teacher_updates:=100}" "${student_updates:=50}" "${decoding:=greedy}" "${seeds:=1}" ;;
  *) usage_error "--preset must be full or quick, not '${preset}'" ;;
esac
case "${device}" in auto|cpu|cuda) ;; *) usage_error "--device must be auto, cpu or cuda" ;; esac
case "${precision}" in fp32|fp16|bf16|amp) ;; *) usage_error "--precision must be fp32, fp16, bf16 or amp" ;; esac
for n in teacher_updates student_updates nprocs threads jobs; do
  [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || usage_error "--${n//_/-} must be a positive integer"
done
[[ "${cache_topk}" =~ ^[0-9]+$ ]] || usage_error "--cache-topk must be 0 (online teacher) or a positive integer"
[[ "${seeds}" =~ ^[0-9]+( [0-9]+)*$ ]] || usage_error "--seeds must be space-separated integers, e.g. \"1 2 3\""
split_words teacher_words --teacher-args "${teacher_args}"  # quotes honoured: a path in them may hold a space

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run_stage() { [[ ${stage} -le $1 && $1 -le ${stop_stage} ]]; }
export OMP_NUM_THREADS="${threads}" MKL_NUM_THREADS="${threads}"
mkdir -p "${work_dir}"
prep_dir="${work_dir}/multi30k"
teacher_dir="${work_dir}/teacher"
study_dir="${work_dir}/study"
t0=$(date +%s)
timing="${work_dir}/timing.tsv"  # stage<TAB>seconds, one line per stage run (the table prints them)
stage_done() { printf '%s\t%s\n' "$1" "$(( $(date +%s) - $2 ))" >> "${timing}"; }
label="${preset}"
[[ "${preset}" == quick ]] && label="quick (SMOKE RUN: budgets far too small for meaningful numbers)"
log "preset ${label}: teacher ${teacher_updates} updates, students ${student_updates} updates, methods ${methods}"

if run_stage 0; then
  log "stage 0: environment"
  bash "${repo}/scripts/setup_env.sh"
fi
# shellcheck disable=SC1091
. "${FAIRSEQ_KD_VENV:-${repo}/.venv}/bin/activate"
[[ "${device}" == auto ]] && device="$(python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')"
[[ "${precision}" == fp32 || "${device}" == cuda ]] || usage_error "--${precision} needs --device cuda"
hw=()  # fairseq hardware flags
[[ "${device}" == cpu ]] && hw+=(--cpu)
[[ "${precision}" == fp32 ]] || hw+=("--${precision}")
study_hw=(--device "${device}" --nprocs "${nprocs}")
# students side by side (CPU, one process each: bench/parallel_cells.sh), else one at a time in this process
student_jobs=1
if [[ "${jobs}" -gt 1 && "${device}" == cpu && "${nprocs}" -eq 1 ]]; then student_jobs="${jobs}"; study_hw+=(--jobs "${jobs}"); else study_hw+=(--in-process); fi
[[ "${precision}" == fp32 ]] || study_hw+=("--${precision}")

if run_stage 1; then
  log "stage 1: preparing Multi30k into ${prep_dir}"
  bash "${repo}/data_prep/prepare_multi30k.sh" ${data_dir:+--data-dir "${data_dir}"} \
    --out-dir "${prep_dir}" --vocab-size "${vocab_size}"
fi

# the teacher's fairseq-train command line (train_teacher, and its settings stamp)
teacher_train=("${prep_dir}/bin" --user-dir "${repo}/fairseq_kd" --task translation -s de -t en)
teacher_train+=(${teacher_words[@]+"${teacher_words[@]}"} --share-all-embeddings --dropout 0.1
  --optimizer adam --adam-betas '(0.9, 0.98)' --lr "${teacher_lr}" --lr-scheduler inverse_sqrt
  --warmup-updates "${teacher_warmup}" --criterion label_smoothed_cross_entropy --label-smoothing 0.1
  --max-tokens "${teacher_max_tokens}" --max-update "${teacher_updates}" --save-dir "${teacher_dir}"
  --no-epoch-checkpoints --validate-interval-updates "${teacher_updates}" --save-interval-updates 150
  --validate-interval 1000000 --save-interval 1000000 --keep-interval-updates 1
  --required-batch-size-multiple 1 --num-workers 0 --seed 1 --log-format json --log-interval 50 "${hw[@]}")

# fairseq-train for the teacher, in nprocs processes on CPU (one per rank, gloo, tcp rendezvous)
train_teacher() {
  local common=("${teacher_train[@]}")
  if [[ "${nprocs}" -eq 1 || "${device}" == cuda ]]; then
    local dist=()
    [[ "${nprocs}" -gt 1 ]] && dist=(--distributed-world-size "${nprocs}")
    fairseq-train "${common[@]}" "${dist[@]}"
  else
    local port rank pids=()
    port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    for (( rank = nprocs - 1; rank >= 0; rank-- )); do
      fairseq-train "${common[@]}" --distributed-world-size "${nprocs}" --distributed-rank "${rank}" \
        --distributed-init-method "tcp://127.0.0.1:${port}" --distributed-no-spawn --distributed-backend gloo \
        --ddp-backend legacy_ddp > >(if [[ ${rank} -eq 0 ]]; then cat; else cat > "${work_dir}/teacher.rank${rank}.log"; fi) 2>&1 &
      pids+=($!)
    done
    local pid status=0
    for pid in "${pids[@]}"; do wait "${pid}" || status=1; done
    return "${status}"
  fi
}

# What stage 2 makes the teacher from (WORK_DIR/teacher/.settings): the given file, or fairseq-train's flags
# but the paths and the device (its data as files, by size and mtime), the processes (the batch) and the data.
teacher_stamp="${teacher_dir}/.settings"
teacher="${teacher_dir}/checkpoint_last.pt"  # the fixed budget's last checkpoint

if run_stage 2; then
  if [[ -n "${teacher_checkpoint}" ]]; then
    [[ -f "${teacher_checkpoint}" ]] || die "--teacher-checkpoint ${teacher_checkpoint} not found"
    given="$(realpath "${teacher_checkpoint}")"
    teacher_settings="$(echo "teacher=given"; echo "teacher_checkpoint=${given}"
      stamp_files teacher_file "$(dirname "${given}")" "$(basename "${given}")")"
  else
    teacher_settings="$(echo "teacher=trained"; stamp_flags "args --user-dir --save-dir --cpu" "${teacher_train[@]}"
      echo "nprocs=${nprocs}"
      stamp_files data_files "${prep_dir}/bin" 'dict.*.txt' 'train.*' 'valid.*')"
  fi
  if [[ -n "${teacher_checkpoint}" && -e "${teacher}" && ! -L "${teacher}" ]]; then  # a trained teacher, not a link
    echo "$(basename "$0"): error: ${teacher} is a teacher trained here, which --teacher-checkpoint would replace;" \
      "use a new --work-dir for the given teacher, or move ${teacher_dir} away first" >&2
    exit 2
  fi
  # a teacher (or a part of one) made with other settings, or by an earlier version that recorded none: refused
  if [[ -e "${teacher_stamp}" || -e "${teacher_dir}/.done" || -e "${teacher}" || -L "${teacher}" ]] &&
      ! stamp_current "${teacher_stamp}" "${teacher_settings}"; then
    refuse_stale "${teacher_dir}" "${teacher_stamp}" "${teacher_settings}" \
      "fix: use a new --work-dir, or delete ${teacher_dir} to make the teacher again"
  fi
  if [[ -n "${teacher_checkpoint}" ]]; then
    mkdir -p "${teacher_dir}"
    printf '%s\n' "${teacher_settings}" > "${teacher_stamp}"
    ln -sfn "${given}" "${teacher}"
    log "stage 2: teacher given (${teacher_checkpoint}), not trained"
    touch "${teacher_dir}/.done"
  elif [[ -f "${teacher}" && -f "${teacher_dir}/.done" ]]; then
    log "stage 2: teacher exists (${teacher}, trained with these settings), skipping"
  else
    log "stage 2: training the teacher (${teacher_updates} updates of ${teacher_max_tokens} tokens x ${nprocs})"
    ts=$(date +%s)
    mkdir -p "${teacher_dir}"
    printf '%s\n' "${teacher_settings}" > "${teacher_stamp}"  # before training: a resumed run is checked too
    train_teacher 2>&1 | tee -a "${work_dir}/teacher.log" | grep --line-buffered -E "\| (train_inner|valid) \|" >&2
    touch "${teacher_dir}/.done"
    stage_done "2 teacher, ${teacher_updates} updates" "${ts}"
  fi
fi

teacher_decode=(--decoding beam --beam 5 --task kd_translation)  # stage 3 (each sentence its own length limit;
# named here so that the stamp of a decode made before, at the batch's limit, differs and it is redone)
if run_stage 3; then
  ts=$(date +%s)
  decoded=""
  for split in valid test; do
    json="${work_dir}/teacher.${split}.json"
    # redone (not refused: a derived score) when the teacher, the data or the decoding differ from its stamp
    settings="$(stamp_files teacher_file "${teacher_dir}" checkpoint_last.pt
      stamp_files data_files "${prep_dir}/bin" 'dict.*.txt' "${split}.*"
      stamp_files ref_file "${prep_dir}/raw" "${split}.en"; stamp_files spm_file "${prep_dir}" spm.model
      stamp_flags "--cpu" "${teacher_decode[@]}" "${hw[@]}")"
    if [[ -f "${json}" ]] && stamp_current "${json}.settings" "${settings}"; then
      log "stage 3: ${json} is of this teacher, data and decoding, skipping"
      continue
    fi
    [[ -f "${json}" ]] && log "stage 3: ${json} is stale ($(stamp_changes "${json}.settings" "${settings}")): decoding again"
    rm -f "${json}" "${json}.settings"
    log "stage 3: teacher BLEU on ${split} (beam 5)"
    bash "${repo}/scripts/decode.sh" --data-bin "${prep_dir}/bin" --checkpoint "${teacher}" --subset "${split}" \
      --out "${work_dir}/teacher.${split}.en" --spm-model "${prep_dir}/spm.model" "${teacher_decode[@]}" \
      --max-tokens 8000 ${hw[@]+-- "${hw[@]}"}
    fairseq-kd-score -i "${work_dir}/teacher.${split}.en" -r "${prep_dir}/raw/${split}.en" \
      -o "${json}" >/dev/null
    printf '%s\n' "${settings}" > "${json}.settings"
    decoded="${decoded:+${decoded}, }${split}"
  done
  [[ -z "${decoded}" ]] || stage_done "3 teacher decoding (${decoded})" "${ts}"
fi

if run_stage 4; then
  log "stage 4: students (${methods}) of ${student_arch}, ${student_updates} updates each, seeds ${seeds}"
  ts=$(date +%s)
  # shellcheck disable=SC2086  # the lists are meant to split into words
  fairseq-kd-study --data "${prep_dir}/bin" -s de -t en --test-ref "${prep_dir}/raw/test.en" \
    --spm-model "${prep_dir}/spm.model" --teacher "${teacher}" --out-dir "${study_dir}" \
    --methods ${methods} --archs "${student_arch}" --decodings "${decoding}" --lrs "${student_lr}" --seeds ${seeds} \
    --max-update "${student_updates}" --warmup-updates "${student_warmup}" --max-tokens "${student_max_tokens}" \
    --validate-interval-updates "${student_updates}" --beam 5 --searches ${searches} \
    --train-args "--share-all-embeddings --dropout 0.1 --num-workers 0 ${student_args}" \
    --method-args "hybrid=--hybrid-weight ${hybrid_weight}" \
    --distill-args "--backend ${distill_backend} --threads ${threads} --shard-size 8000" "${study_hw[@]}" \
    --cache-topk "${cache_topk}" --cache-methods word hybrid
  stage_done "4 students (${methods}; seeds ${seeds}) with distillation and caches" "${ts}"
fi

if run_stage 5; then
  log "stage 5: results"
  teacher_test=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["bleu"]["score"])' \
    "${work_dir}/teacher.test.json")  # stage 3's beam-5 BLEU: the gap-closed column of beam-5 rows
  fairseq-kd-report "${study_dir}/results.csv" --out-dir "${work_dir}/report" --teacher-bleu "beam5=${teacher_test}" >/dev/null
  {
    echo "## Multi30k de-en, test_2016_flickr (sacrebleu), preset ${label}"
    echo
    python - "${work_dir}" "${study_dir}" "${decoding}" "${student_jobs}" <<'PY'
import csv, glob, json, os, sys
work, study, decoding, jobs = *sys.argv[1:4], int(sys.argv[4])
t = {s: json.load(open(os.path.join(work, f"teacher.{s}.json"))) for s in ("valid", "test")}
summary = os.path.join(study, "distilled", decoding, "summary.json")
print(f"Teacher: BLEU {t['test']['bleu']['score']:.2f} on test (valid {t['valid']['bleu']['score']:.2f}), beam 5  ")
if os.path.isfile(summary):
    s = json.load(open(summary))
    print(f"seq-KD data: the teacher's {decoding} translations of train, BLEU {s.get('bleu', '?')} against the gold "
          f"targets  ")
print(f"`{t['test']['bleu']['signature']}`")
print()
print("| stage | wall time (s) |")
print("|---|---:|")
timing = os.path.join(work, "timing.tsv")
for line in (open(timing, encoding="utf-8").read().splitlines() if os.path.isfile(timing) else []):
    name, secs = line.rsplit("\t", 1)
    print(f"| {name} | {secs} |")
for done in sorted(glob.glob(os.path.join(study, "cache", "*", ".complete"))):
    c = json.load(open(done))
    print(f"| of which: teacher top-k cache of {os.path.basename(os.path.dirname(done))} | {c['seconds']:.0f} |")
from fairseq_kd.study.records import read_csv  # checked rows: a copied row is counted once
rows = read_csv(os.path.join(study, "results.csv"))
per = {}
for r in rows:
    if r["search"] == rows[0]["search"]:
        per.setdefault(r["method"], []).append(float(r["train_time"]))
for m, times in per.items():
    side = f", {jobs} at a time" if jobs > 1 else ""
    print(f"| of which: training {m} students (mean of {len(times)}{side}) | {sum(times) / len(times):.0f} |")
PY
    echo
    cat "${work_dir}/report/table.md"
    echo
    echo "Each student exported to CTranslate2 int8 (fairseq-kd-export), beam 5, test_2016_flickr:"
    echo
    python -m fairseq_kd.export.evaluate "${study_dir}" "${prep_dir}/bin" "${prep_dir}/raw/test.en" 5 "${threads}"
  } > "${work_dir}/results.md"
  cat "${work_dir}/results.md"
  log "done in $(( $(date +%s) - t0 )) s (preset ${label}); table in ${work_dir}/results.md, plots in ${work_dir}/report/"
fi
