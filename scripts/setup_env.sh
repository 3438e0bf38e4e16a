#!/usr/bin/env bash
# Create (or reuse) the project virtualenv with the tested stack. Idempotent:
# a second run checks the stamp and exits in a second.
#   usage: scripts/setup_env.sh [VENV_DIR]      (default: .venv next to this repo)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-${FAIRSEQ_KD_VENV:-${repo}/.venv}}"   # where the environment lives
python="${PYTHON:-python3}"                       # interpreter to build the venv from (3.11 tested)
stamp="${venv}/.fairseq_kd_stack"                 # records the installed requirements

want="$(cat "${repo}/requirements.txt" "${repo}/setup.py" | sha256sum | cut -d' ' -f1)"
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
"${pip[@]}" "torch==2.13.0" "numpy<2" cython
if ! "${venv}/bin/python" -c "import fairseq, fairseq.data.data_utils_fast" 2>/dev/null; then
  log "building fairseq-fixed 0.12.3.1 (about 3 minutes on 2 cores)"
  "${pip[@]}" --no-build-isolation "fairseq-fixed==0.12.3.1"
fi
log "installing the rest of requirements.txt"
"${pip[@]}" -r "${repo}/requirements.txt"
"${pip[@]}" --no-build-isolation --no-deps -e "${repo}"
"${venv}/bin/python" -c "import numpy, torch, fairseq, fairseq_kd; assert numpy.__version__ < '2', numpy.__version__"
echo "${want}" > "${stamp}"
log "ready: ${venv}"
