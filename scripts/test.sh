#!/usr/bin/env bash
# Set up the environment (idempotent) and run the test suite, all three tiers by default.
#   bash scripts/test.sh                  # unit + integration + slow (slow ones need real data)
#   bash scripts/test.sh -m "not slow"    # any pytest arguments pass through
# Real data for the slow tier: $FAIRSEQ_KD_DATA, default ../shared/data beside the checkout
# (tests that need it are skipped, with the reason, when it is absent).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${FAIRSEQ_KD_VENV:-${repo}/.venv}"   # environment made by scripts/setup_env.sh

bash "${repo}/scripts/setup_env.sh" "${venv}"
export FAIRSEQ_KD_DATA="${FAIRSEQ_KD_DATA:-${repo}/../shared/data}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
cd "${repo}"
exec "${venv}/bin/python" -m pytest "$@"
