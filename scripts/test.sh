#!/usr/bin/env bash
# Set up the environment (idempotent) and run the test suite, all three tiers by default.
#   bash scripts/test.sh                  # unit + integration + slow (slow ones need real data)
#   bash scripts/test.sh -m "not slow"    # any pytest arguments pass through
#   FAIRSEQ_KD_TEST_WORKERS=1 bash scripts/test.sh   # one process (default: one worker per core, at most 4)
# Real data for the slow tier: $FAIRSEQ_KD_DATA, default ../shared/data beside the checkout
# (tests that need it are skipped, with the reason, when it is absent).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${FAIRSEQ_KD_VENV:-${repo}/.venv}"   # environment made by scripts/setup_env.sh

workers="${FAIRSEQ_KD_TEST_WORKERS:-$(nproc)}"   # pytest-xdist workers, one thread each; 1: one process
if [[ ! "${workers}" =~ ^[1-9][0-9]*$ ]]; then
  echo "scripts/test.sh: FAIRSEQ_KD_TEST_WORKERS must be a positive integer, got '${workers}'" >&2; exit 2
fi
(( workers > 4 )) && workers=4                  # each worker trains tiny models: memory, not cores, binds beyond 4

bash "${repo}/scripts/setup_env.sh" "${venv}"
export FAIRSEQ_KD_DATA="${FAIRSEQ_KD_DATA:-${repo}/../shared/data}"
cd "${repo}"
xdist=()
if (( workers > 1 )) && [[ " $* " != *" -n "* && " $* " != *" -n="* && " $* " != *"no:xdist"* \
      && " $* " != *" --pdb "* ]]; then
  # whole files per worker (module fixtures built once); files in conftest.py's order, slow tier first
  xdist=(-n "${workers}" --dist loadfile --no-loadscope-reorder)
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec "${venv}/bin/python" -m pytest "${xdist[@]}" "$@"
