#!/usr/bin/env bash
# The prepared GPU check: bf16 word_kd step time with the 146M ladder teacher and a ~20M
# student, online (full and top-8) and cached, at T=1 and T=2, as ratios to CE, with target tokens/s and
# peak GPU memory per mode. One command, well under 10 minutes on one H100/H200-class GPU.
#
#   bash bench/gpu_word_kd.sh [--data-bin exp/main/multi30k/bin] [--out exp/gpu]
#
# Needs an environment with a CUDA build of torch (FAIRSEQ_KD_TORCH=cuda scripts/setup_env.sh)
# and a binarized corpus (scripts/main.sh --stop-stage 1 makes exp/main/multi30k/bin). The teacher is
# initialised with one update: step times do not depend on its weights.
set -euo pipefail

data_bin=exp/main/multi30k/bin   # binarized Multi30k (de-en) from scripts/main.sh stage 1
out=exp/gpu                      # where the JSON and the log go
teacher_arch=transformer_relu_146m
student_arch=transformer_relu_20m
max_tokens=8192                  # tokens per batch
steps=10                         # timed batches per mode per round
rounds=3

usage() { sed -n 2,9p "$0" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data-bin) data_bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "gpu_word_kd.sh: unknown option $1" >&2; usage ;;
  esac
done
[[ -f "${data_bin}/dict.de.txt" ]] || { echo "gpu_word_kd.sh: ${data_bin}/dict.de.txt not found: run scripts/main.sh --stop-stage 1 or pass --data-bin" >&2; exit 2; }
python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || { echo "gpu_word_kd.sh: torch sees no GPU (install a CUDA build of torch: scripts/setup_env.sh)" >&2; exit 2; }
mkdir -p "${out}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "${out}/gpu.txt" || true
python "$(dirname "$0")/bench_word_kd.py" --data "${data_bin}" -s de -t en --split valid \
  --teacher-arch "${teacher_arch}" --student-arch "${student_arch}" --device cuda --bf16 \
  --max-tokens "${max_tokens}" --steps "${steps}" --rounds "${rounds}" --threads 8 \
  --json "${out}/bench_word_kd_gpu.json" 2>&1 | tee "${out}/bench_word_kd_gpu.log"
