#!/usr/bin/env bash
# Run a queue of long jobs (study commands) on N one-thread lanes: each lane takes the first job that is
# not done, not taken by another lane and whose needs are done, runs it, and goes on until the queue has
# nothing left. Stop it any time (kill the process group); run the same command again to go on: done jobs
# are skipped, an interrupted study resumes from its results.csv, jobs appended to the queue are picked up.
#
#   scripts/run_lanes.sh --queue exp/lanes/queue.txt --lanes 2          # run
#   scripts/run_lanes.sh --queue exp/lanes/queue.txt --status 1         # the jobs' states, then exit
#
# Queue file: one job per line, "NAME [after=NAME,NAME] -- COMMAND" (blank lines and # comments skipped);
# COMMAND runs with bash from the repository root with OMP_NUM_THREADS=--threads. A job that fails (exit
# not 0) is marked failed, and so is every job that needs it; a job killed by a signal stays pending.
# State: STATE_DIR/NAME.{done,failed,log,lock} (default: the queue file's folder + /.lanes); NAME.done holds
# the command that ran, and a done job whose command the queue has since changed is refused at the start
# (rename the job to run the new command, or delete its .done to run it again).
set -euo pipefail

# ---- options ----------------------------------------------------------------------------------------
queue=""                # the queue file
lanes=2                 # lanes (processes) taking jobs
threads=1               # OMP_NUM_THREADS / MKL_NUM_THREADS of every job
state_dir=""            # where .done / .failed / .log / .lock go (default: QUEUE's folder/.lanes)
poll=30                 # seconds a lane waits before looking again when every open job is taken or waiting
status=0                # 1 or true: print each job's state and exit (0 or false: run the queue)

. "$(dirname "${BASH_SOURCE[0]}")/../data_prep/common.sh"  # parse_flags, die, usage_error
parse_flags "$@"
[[ -n "${queue}" ]] || usage_error "--queue is required"
[[ -f "${queue}" ]] || usage_error "--queue ${queue}: no such file"
[[ "${lanes}" =~ ^[1-9][0-9]*$ && "${threads}" =~ ^[1-9][0-9]*$ && "${poll}" =~ ^[0-9]+$ ]] \
  || usage_error "--lanes and --threads are positive integers, --poll an integer"
case "${status}" in
  1|true) status=1 ;;
  0|false) status=0 ;;
  *) usage_error "--status ${status}: use 1 or true (print the jobs' states and exit), 0 or false (run)" ;;
esac
state_dir="${state_dir:-$(dirname "${queue}")/.lanes}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
declare -A cmd_of=()    # job name -> its command in the queue (read_queue)

# read_queue: fills names[], needs[] (comma lists) and cmds[]; refuses a malformed line naming it.
read_queue() {
  names=(); needs=(); cmds=(); cmd_of=()
  local n=0 line head name rest dep
  declare -A seen=()
  while IFS= read -r line || [[ -n "${line}" ]]; do
    n=$((n + 1))
    [[ "${line}" =~ ^[[:space:]]*(#|$) ]] && continue
    [[ "${line}" == *" -- "* ]] || usage_error "${queue}:${n}: write a job as NAME [after=NAME,...] -- COMMAND"
    head="${line%% -- *}"; read -r name rest <<< "${head}"
    [[ "${name}" =~ ^[A-Za-z0-9._-]+$ ]] || usage_error "${queue}:${n}: job name '${name}': letters, digits, . _ - only"
    [[ -z "${seen[${name}]:-}" ]] || usage_error "${queue}:${n}: job name ${name} is also on line ${seen[${name}]}"
    [[ -z "${rest}" || "${rest}" =~ ^after=[A-Za-z0-9._,-]+$ ]] \
      || usage_error "${queue}:${n}: '${rest}': the only option is after=NAME[,NAME...]"
    seen[${name}]=${n}
    names+=("${name}"); needs+=("${rest#after=}"); cmds+=("${line#* -- }"); cmd_of[${name}]=${line#* -- }
  done < "${queue}"
  for n in "${!names[@]}"; do
    IFS=, read -ra dep <<< "${needs[n]}"
    for d in "${dep[@]}"; do
      [[ -n "${seen[${d}]:-}" ]] || usage_error "${queue}: job ${names[n]} needs ${d}, which is not in the queue"
    done
  done
}

# job_state NAME: done | changed (done, by another command than the queue's now) | failed | running (a lane
# holds its lock) | open. A .done written before commands were recorded is empty: done.
job_state() {
  local s="${state_dir}/$1"
  if [[ -e "${s}.done" ]]; then
    if [[ -s "${s}.done" && "$(cat "${s}.done")" != "${cmd_of[$1]}" ]]; then echo changed; else echo done; fi
  elif [[ -e "${s}.failed" ]]; then echo failed
  elif [[ -e "${s}.lock" ]] && ! flock -n "${s}.lock" true; then echo running
  else echo open; fi
}

# needs_state I: done (all done; a changed job's outputs are there) | failed (one failed) | wait
needs_state() {
  local d dep st
  IFS=, read -ra dep <<< "${needs[$1]}"
  for d in "${dep[@]}"; do
    st=$(job_state "${d}")
    [[ "${st}" == failed ]] && { echo failed; return; }
    [[ "${st}" == done || "${st}" == changed ]] || { echo wait; return; }
  done
  echo done
}

lane() {  # lane NUMBER
  local i rc st open
  while true; do
    read_queue
    open=0
    for i in "${!names[@]}"; do
      [[ $(job_state "${names[i]}") == open ]] || continue
      open=1
      st=$(needs_state "${i}")
      if [[ "${st}" == failed ]]; then
        echo "needs ${needs[i]}: one of them failed" > "${state_dir}/${names[i]}.failed"; continue
      fi
      [[ "${st}" == done ]] || continue
      exec {fd}> "${state_dir}/${names[i]}.lock"
      flock -n "${fd}" || { exec {fd}>&-; continue; }
      [[ -e "${state_dir}/${names[i]}.done" ]] && { exec {fd}>&-; continue; }  # finished while we looked
      echo "[lane $1 $(date -u +%FT%TZ)] start ${names[i]}: ${cmds[i]}" >&2
      set +e
      (cd "${repo}" && OMP_NUM_THREADS=${threads} MKL_NUM_THREADS=${threads} exec bash -c "${cmds[i]}") \
        {fd}>&- >> "${state_dir}/${names[i]}.log" 2>&1
      rc=$?
      set -e
      if [[ ${rc} -eq 0 ]]; then
        printf '%s\n' "${cmds[i]}" > "${state_dir}/${names[i]}.done"
      elif [[ ${rc} -gt 128 ]]; then
        echo "[lane $1 $(date -u +%FT%TZ)] ${names[i]} killed by signal $((rc - 128)): left open" >&2
        exec {fd}>&-; return 1
      else
        echo "exit ${rc}; see ${names[i]}.log" > "${state_dir}/${names[i]}.failed"
      fi
      echo "[lane $1 $(date -u +%FT%TZ)] end ${names[i]}: exit ${rc}" >&2
      exec {fd}>&-
      continue 2  # from the top: earlier jobs first
    done
    [[ ${open} -eq 1 ]] || { echo "[lane $1 $(date -u +%FT%TZ)] nothing left" >&2; return 0; }
    sleep "${poll}"
  done
}

mkdir -p "${state_dir}"
read_queue
if [[ "${status}" == 1 ]]; then
  for i in "${!names[@]}"; do
    st=$(job_state "${names[i]}"); [[ "${st}" == open ]] && st="$( [[ $(needs_state "${i}") == wait ]] && echo waiting || echo open)"
    printf '%-8s %-24s %s\n' "${st}" "${names[i]}" "${cmds[i]}"
  done
  exit 0
fi
for i in "${!names[@]}"; do
  [[ $(job_state "${names[i]}") != changed ]] || die "job ${names[i]} is done, but by another command than the \
queue's now ($(cat "${state_dir}/${names[i]}.done")): rename the job in ${queue} to run the new command, or delete \
${state_dir}/${names[i]}.done to run it again"
done
rm -f "${state_dir}"/*.failed  # every run tries the failed jobs again
pids=()
for l in $(seq 1 "${lanes}"); do lane "${l}" & pids+=($!); done
rc=0
for p in "${pids[@]}"; do wait "${p}" || rc=1; done
failed=("${state_dir}"/*.failed)
if [[ -e "${failed[0]}" ]]; then
  for f in "${failed[@]}"; do echo "run_lanes.sh: $(basename "${f}" .failed) failed: $(cat "${f}")" >&2; done
  rc=1
fi
exit ${rc}
