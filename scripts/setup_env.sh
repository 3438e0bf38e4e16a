#!/usr/bin/env bash
# Create (or reuse) the project virtualenv with the tested stack. Idempotent:
# a second run checks the stamp and exits in a second.
#   usage: scripts/setup_env.sh [VENV_DIR]      (default: .venv next to this repo)
#   GPU:   FAIRSEQ_KD_TORCH=cuda scripts/setup_env.sh   (CUDA build of the same torch version from
#          FAIRSEQ_KD_TORCH_INDEX, default the PyTorch cu126 wheel index; fairseq is built against it)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-${FAIRSEQ_KD_VENV:-${repo}/.venv}}"   # where the environment lives
python="${PYTHON:-python3}"                       # interpreter to build the venv from (3.11 tested)
stamp="${venv}/.fairseq_kd_stack"                 # records the installed requirements
torch_build="${FAIRSEQ_KD_TORCH:-cpu}"            # cpu | cuda: which torch build to install
torch_index="${FAIRSEQ_KD_TORCH_INDEX:-https://download.pytorch.org/whl/cu126}"  # where the CUDA build comes from

case "${torch_build}" in cpu|cuda) ;; *) echo "setup_env.sh: FAIRSEQ_KD_TORCH must be cpu or cuda, not '${torch_build}'" >&2; exit 2 ;; esac
stack_id() { cat "${repo}/requirements.txt" "${repo}/requirements-test.txt" "${repo}/setup.py"; [[ "${torch_build}" == cpu ]] || echo "torch=${torch_build}"; }
want="$(stack_id | sha256sum | cut -d' ' -f1)"
if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
  exit 0
fi

log() { echo "[setup_env] $*" >&2; }
[[ -x "${venv}/bin/python" ]] || { log "creating ${venv}"; "${python}" -m venv "${venv}"; }
pip=("${venv}/bin/python" -m pip install --disable-pip-version-check -q)

# Order matters: torch from the local CPU build first (a bare `torch` would pull CUDA
# wheels), then numpy<2 and cython, then fairseq-fixed built against them.
"${pip[@]}" --upgrade pip wheel "setuptools<81"
log "installing torch / numpy / cython"
torch_pin="$(grep -E '^torch==' "${repo}/requirements.txt" | head -n 1)"
torch_pin="${torch_pin:-torch==2.13.0}"
if [[ "${torch_build}" == cuda ]]; then
  log "installing the CUDA build of ${torch_pin} from ${torch_index}"
  "${pip[@]}" --index-url "${torch_index}" "${torch_pin}"
  "${pip[@]}" "numpy<2" cython
else
  "${pip[@]}" "${torch_pin}" "numpy<2" cython
fi
if ! "${venv}/bin/python" -c "import fairseq, fairseq.data.data_utils_fast" 2>/dev/null; then
  log "building fairseq-fixed 0.12.3.1 (about 3 minutes on 2 cores)"
  "${pip[@]}" --no-build-isolation "fairseq-fixed==0.12.3.1"
fi
log "installing the rest of requirements.txt"
"${pip[@]}" -r "${repo}/requirements.txt"
"${pip[@]}" -r "${repo}/requirements-test.txt"   # test-only (transformers: the tiny local Marian teacher)
"${pip[@]}" --no-build-isolation --no-deps -e "${repo}"
"${venv}/bin/python" -c "import numpy, torch, fairseq, fairseq_kd; assert numpy.__version__ < '2', numpy.__version__"
echo "${want}" > "${stamp}"
log "ready: ${venv}"
