# Hardware options shared by scripts/train_student.sh, scripts/distill.sh and scripts/recipes/*.
# Source it after declaring the caller's variables:
#   device=auto precision=fp32 nprocs=1       # caller's defaults (--device, --precision, --nprocs)
#   . scripts/hw.sh; hw_split_switches "$@"; parse_flags "${hw_rest[@]+"${hw_rest[@]}"}"; hw_resolve
# With dry_run=true (--dry-run true) commands are printed (one line each, shell-quoted), not run.
# then: "${hw_train[@]}" (fairseq-train/-generate flags: --cpu, --fp16 / --bf16 / --amp),
#       fairseq_train_n LOG ARGS... (fairseq-train in ${nprocs} processes),
#       "${hw_distill[@]}" (fairseq-kd-distill / fairseq-kd-cache flags).
# shellcheck disable=SC2034

# hw_split_switches "$@": the value-less --fp16 / --bf16 / --amp set ${precision}; the rest go to hw_rest.
hw_split_switches() {
  hw_rest=()
  local a
  for a in "$@"; do
    case "${a}" in --fp16|--bf16|--amp) precision="${a#--}" ;; *) hw_rest+=("${a}") ;; esac
  done
}

# hw_run CMD...: run CMD, or print it under --dry-run true.
hw_run() {
  if [[ "${dry_run:-false}" == true ]]; then
    printf '+'; printf ' %q' "$@"; echo
  else
    "$@"
  fi
}

# hw_resolve: check --device/--precision/--nprocs, resolve --device auto, fill hw_train / hw_distill.
hw_resolve() {
  case "${device}" in auto|cpu|cuda) ;; *) usage_error "--device must be auto, cpu or cuda, not '${device}'" ;; esac
  case "${precision}" in auto|fp32|fp16|bf16|amp) ;; *) usage_error "--precision must be auto, fp32, fp16, bf16 or amp" ;; esac
  [[ "${nprocs}" =~ ^[1-9][0-9]*$ ]] || usage_error "--nprocs must be a positive integer, not '${nprocs}'"
  case "${dry_run:-false}" in true|false) ;; *) usage_error "--dry-run must be true or false" ;; esac
  if [[ "${device}" == auto ]]; then
    device="$("${python:-python3}" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")' 2>/dev/null || echo cpu)"
  fi
  if [[ "${precision}" == auto ]]; then  # mixed precision on GPU, fp32 on CPU
    precision=fp32
    [[ "${device}" == cuda ]] && precision=fp16
  fi
  [[ "${precision}" == fp32 || "${device}" == cuda ]] || usage_error "--${precision} needs --device cuda (CPU trains in fp32)"
  hw_train=()
  [[ "${device}" == cpu ]] && hw_train+=(--cpu)
  [[ "${precision}" == fp32 ]] || hw_train+=("--${precision}")
  hw_distill=()
  [[ "${device}" == cpu ]] && hw_distill+=(--cpu)
  case "${precision}" in fp16|amp) hw_distill+=(--fp16) ;; bf16) hw_distill+=(--bf16) ;; esac
  return 0
}

# fairseq_train_n LOG ARGS...: fairseq-train ARGS in ${nprocs} data-parallel processes, output to LOG.
# GPU: fairseq spawns one process per GPU itself (--distributed-world-size). CPU: one process
# per rank, gloo, tcp rendezvous on a free local port, legacy_ddp (the launch README documents).
fairseq_train_n() {
  local log="$1"; shift
  if [[ "${dry_run:-false}" == true ]]; then
    if [[ "${nprocs}" -eq 1 ]]; then
      hw_run fairseq-train "$@"
    elif [[ "${device}" == cuda ]]; then
      hw_run fairseq-train "$@" --distributed-world-size "${nprocs}"
    else
      for (( rank = 0; rank < nprocs; rank++ )); do
        hw_run fairseq-train "$@" --distributed-world-size "${nprocs}" --distributed-rank "${rank}" \
          --distributed-init-method "tcp://127.0.0.1:PORT" --distributed-no-spawn --distributed-backend gloo \
          --ddp-backend legacy_ddp
      done
    fi
    return 0
  fi
  if [[ "${nprocs}" -eq 1 ]]; then
    fairseq-train "$@" 2>&1 | tee -a "${log}"
    return "${PIPESTATUS[0]}"
  fi
  if [[ "${device}" == cuda ]]; then
    fairseq-train "$@" --distributed-world-size "${nprocs}" 2>&1 | tee -a "${log}"
    return "${PIPESTATUS[0]}"
  fi
  local port rank pids=() status=0 pid
  port="$("${python:-python3}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  for (( rank = nprocs - 1; rank >= 0; rank-- )); do
    if [[ ${rank} -eq 0 ]]; then  # (process substitution: $! is fairseq-train's own pid)
      fairseq-train "$@" --distributed-world-size "${nprocs}" --distributed-rank 0 \
        --distributed-init-method "tcp://127.0.0.1:${port}" --distributed-no-spawn --distributed-backend gloo \
        --ddp-backend legacy_ddp > >(tee -a "${log}") 2>&1 &
    else
      fairseq-train "$@" --distributed-world-size "${nprocs}" --distributed-rank "${rank}" \
        --distributed-init-method "tcp://127.0.0.1:${port}" --distributed-no-spawn --distributed-backend gloo \
        --ddp-backend legacy_ddp >> "${log}.rank${rank}" 2>&1 &
    fi
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "${pid}" || status=1; done
  return "${status}"
}
