#!/usr/bin/env bash
# Run a queue of long jobs (study commands) on N one-thread lanes: each lane takes the first job that is
# not done, not taken by another lane and whose needs are done, runs it, and goes on until the queue has
# nothing left. Stop it any time (kill the process group); run the same command again to go on: done jobs
# are skipped, an interrupted study resumes from its results.csv, jobs appended to the queue are picked up.
#
#   scripts/run_lanes.sh --queue exp/lanes/queue.txt --lanes 2          # run
#   scripts/run_lanes.sh --queue exp/lanes/queue.txt --status 1         # the jobs' states, then exit
#
# Queue file: one job per line, "NAME [after=NAME,NAME] -- COMMAND" (blank lines and # comments skipped;
# a cycle of after= is refused, naming it);
# COMMAND runs with bash from the repository root with OMP_NUM_THREADS=--threads. A job that fails (exit
# not 0) is marked failed, and so is every job that needs it; a job killed by a signal stays pending.
# State: STATE_DIR/NAME.{done,failed,log,lock} (default: the queue file's folder + /.lanes). NAME.done holds
# the command that ran, then a "ran" line (when, where: each run's .done differs) and a "need NAME SHA256"
# line for each job it ran after (the sha256 of that job's .done when it started). A done job is refused
# at the start when the queue has since changed its command (changed: rename the job to run the new
# command, or delete its .done to run it again) or when a job it ran after has run again or lost its .done
# since (stale: delete its .done to run it again on the new outputs, or restore the old ones and that
# job's .done). A changed or stale job never counts as done for the jobs after it: while lanes run, those
# wait (for you to delete or restore a .done), and a lane with nothing else it can run stops, naming them.
# Deleting NAME.done to run NAME again therefore asks for the .done of every done job after it too.
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
declare -A idx_of=()    # job name -> its index in names[] (read_queue)
declare -A state_of=()  # job name -> its state (scan_states)
declare -A ns_memo=()   # job index -> needs_state's answer in this scan (scan_states empties it)

# read_queue: fills names[], needs[] (comma lists) and cmds[]; refuses a malformed line naming it.
read_queue() {
  names=(); needs=(); cmds=(); cmd_of=(); idx_of=()
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
    idx_of[${name}]=$((${#names[@]} - 1))
  done < "${queue}"
  for n in "${!names[@]}"; do
    IFS=, read -ra dep <<< "${needs[n]}"
    for d in "${dep[@]}"; do
      [[ -n "${seen[${d}]:-}" ]] || usage_error "${queue}: job ${names[n]} needs ${d}, which is not in the queue"
    done
  done
  check_cycles
}

# check_cycles (after read_queue): a job that needs itself, directly or through other jobs' after=, would
# wait for ever (no lane can start it): refused naming the ring, e.g. "a -> b -> a".
check_cycles() {
  local -A mark=()  # job name -> 1 while on the current path, 2 when every path from it is clear
  local -a path=()
  local n
  cycle_visit() {
    local name=$1 d i
    local -a dep
    path+=("${name}"); mark[${name}]=1
    IFS=, read -ra dep <<< "${needs[${idx_of[${name}]}]}"
    for d in "${dep[@]}"; do
      if [[ "${mark[${d}]:-}" == 1 ]]; then  # back on the path: the ring is from d's place to here
        for i in "${!path[@]}"; do [[ "${path[i]}" == "${d}" ]] && break; done
        local ring="${path[*]:i}"
        usage_error "${queue}: after= makes a cycle, ${ring// / -> } -> ${d}: no job of it could ever start; \
drop one of these after= entries"
      fi
      [[ -n "${mark[${d}]:-}" ]] || cycle_visit "${d}"
    done
    mark[${name}]=2; unset 'path[-1]'
  }
  for n in "${names[@]}"; do [[ -n "${mark[${n}]:-}" ]] || cycle_visit "${n}"; done
}

sha_of() { sha256sum < "$1" | cut -d' ' -f1; }

# stale_need NAME: for a done job, the first job it ran after whose .done is gone or differs from the one it
# ran on ("NEED gone" / "NEED ran again"); nothing when none. A .done without "need" lines (written before
# they were recorded: empty, or the command only) records nothing of its needs, which are unknown: it is
# never stale.
stale_need() {
  local tag d sha rest
  while read -r tag d sha rest; do
    [[ "${tag}" == need && -n "${sha}" ]] || continue
    if [[ ! -e "${state_dir}/${d}.done" ]]; then echo "${d} gone"; return
    elif [[ "$(sha_of "${state_dir}/${d}.done")" != "${sha}" ]]; then echo "${d} ran again"; return; fi
  done < <(tail -n +2 "${state_dir}/$1.done")
}

# job_state NAME: done | changed (done, by another command than the queue's now) | stale (done, but a job it
# ran after has run again or lost its .done since: stale_need) | failed | running (a lane holds its lock) |
# open. A .done written before commands were recorded is empty: done.
job_state() {
  local s="${state_dir}/$1" first=""
  if [[ -e "${s}.done" ]]; then
    IFS= read -r first < "${s}.done" || true
    if [[ -n "${first}" && "${first}" != "${cmd_of[$1]}" ]]; then echo changed
    elif [[ -n "$(stale_need "$1")" ]]; then echo stale
    else echo done; fi
  elif [[ -e "${s}.failed" ]]; then echo failed
  elif [[ -e "${s}.lock" ]] && ! flock -n "${s}.lock" true; then echo running
  else echo open; fi
}

scan_states() {  # state_of[NAME] for every job of the queue, one look each
  local n
  state_of=(); ns_memo=()
  for n in "${names[@]}"; do state_of[${n}]=$(job_state "${n}"); done
}

# needs_state I (after scan_states): sets ns to done (every need done) | failed (one failed) | blocked:NAME
# (NAME, a need or the need of a need still to run, is changed or stale: it counts as done for nothing, and
# only you can clear it) | wait (a need is still to run or running).
needs_state() {
  local i=$1 d out=done
  local -a dep
  if [[ -n "${ns_memo[${i}]:-}" ]]; then ns=${ns_memo[${i}]}; return; fi
  ns_memo[${i}]=wait  # (a cycle of after= is refused by read_queue)
  IFS=, read -ra dep <<< "${needs[i]}"
  for d in "${dep[@]}"; do
    case "${state_of[${d}]}" in
      done) ;;
      failed) out=failed; break ;;
      changed|stale) out="blocked:${d}"; break ;;
      open) needs_state "${idx_of[${d}]}"; [[ "${ns}" == blocked:* ]] && { out=${ns}; break; }; out=wait ;;
      *) out=wait ;;
    esac
  done
  ns_memo[${i}]=${out}; ns=${out}
}

# why_not NAME (after scan_states): why a done job is refused (changed or stale), and the ways on.
why_not() {
  local d=${state_dir}/$1.done need n
  if [[ "${state_of[$1]}" == changed ]]; then
    echo "job $1 is done, but by another command than the queue's now ($(head -n 1 "${d}")): rename the job in \
${queue} to run the new command, or delete ${d} to run it again"
  else
    need=$(stale_need "$1"); n=${need%% *}
    if [[ "${need}" == *gone ]]; then
      echo "job $1 is done, but ${n}, which it ran after, has no .done now (to run again), so $1 is stale: \
delete ${d} to run $1 again after ${n}, or restore the ${state_dir}/${n}.done (and outputs) that $1 ran on"
    else
      echo "job $1 is done, but ${n}, which it ran after, has run again since, so $1 is stale: delete ${d} \
to run $1 again on ${n}'s new outputs, or restore ${n}'s outputs and the ${state_dir}/${n}.done that $1 ran on"
    fi
  fi
}

# done_after NAME: the done jobs that ran after NAME, or after one of them (they go stale when NAME reruns).
done_after() {
  local -A hit=([$1]=1)
  local i d more=1 out=()
  local -a dep
  while [[ ${more} -eq 1 ]]; do
    more=0
    for i in "${!names[@]}"; do
      [[ -z "${hit[${names[i]}]:-}" && "${state_of[${names[i]}]}" =~ ^(done|changed|stale)$ ]] || continue
      IFS=, read -ra dep <<< "${needs[i]}"
      for d in "${dep[@]}"; do
        [[ -n "${hit[${d}]:-}" ]] && { hit[${names[i]}]=1; out+=("${names[i]}"); more=1; break; }
      done
    done
  done
  echo "${out[*]}"
}

lane() {  # lane NUMBER
  local i rc open live d sha rec b
  local -a dep=() blocked=()
  local -A told=()  # the jobs whose wait this lane has reported
  while true; do
    read_queue
    scan_states
    open=0; live=0; blocked=()
    for i in "${!names[@]}"; do
      [[ "${state_of[${names[i]}]}" == open ]] || continue
      open=1
      needs_state "${i}"
      if [[ "${ns}" == failed ]]; then
        echo "needs ${needs[i]}: one of them failed" > "${state_dir}/${names[i]}.failed"; continue
      fi
      if [[ "${ns}" == blocked:* ]]; then  # waits for you, not for a lane
        blocked+=("${names[i]}, which waits on ${ns#blocked:}: $(why_not "${ns#blocked:}")")
        [[ -n "${told[${names[i]}]:-}" ]] || echo "[lane $1 $(date -u +%FT%TZ)] ${blocked[-1]}" >&2
        told[${names[i]}]=1; continue
      fi
      live=1
      [[ "${ns}" == done ]] || continue
      exec {fd}> "${state_dir}/${names[i]}.lock"
      flock -n "${fd}" || { exec {fd}>&-; continue; }
      [[ -e "${state_dir}/${names[i]}.done" ]] && { exec {fd}>&-; continue; }  # finished while we looked
      rec=""  # the .done of each need as it is now, when the job starts on its outputs
      IFS=, read -ra dep <<< "${needs[i]}"
      for d in "${dep[@]}"; do
        sha=$(sha_of "${state_dir}/${d}.done" 2> /dev/null) || { exec {fd}>&-; continue 3; }  # gone meanwhile
        rec+="need ${d} ${sha}"$'\n'
      done
      echo "[lane $1 $(date -u +%FT%TZ)] start ${names[i]}: ${cmds[i]}" >&2
      set +e
      (cd "${repo}" && OMP_NUM_THREADS=${threads} MKL_NUM_THREADS=${threads} exec bash -c "${cmds[i]}") \
        {fd}>&- >> "${state_dir}/${names[i]}.log" 2>&1
      rc=$?
      set -e
      if [[ ${rc} -eq 0 ]]; then  # written whole, then renamed: a lane never reads half a .done
        printf '%s\nran %s on %s pid %s\n%s' "${cmds[i]}" "$(date -u +%FT%T.%NZ)" "${HOSTNAME:-?}" "${BASHPID}" \
          "${rec}" > "${state_dir}/${names[i]}.done.tmp"
        mv -f "${state_dir}/${names[i]}.done.tmp" "${state_dir}/${names[i]}.done"
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
    if [[ ${live} -eq 0 ]]; then  # every job left needs a changed or stale job: none of them can ever run
      for b in "${blocked[@]}"; do echo "[lane $1 $(date -u +%FT%TZ)] not run: ${b}" >&2; done
      return 1
    fi
    sleep "${poll}"
  done
}

mkdir -p "${state_dir}"
read_queue
scan_states
if [[ "${status}" == 1 ]]; then
  for i in "${!names[@]}"; do
    st=${state_of[${names[i]}]}
    if [[ "${st}" == open ]]; then needs_state "${i}"; [[ "${ns}" == wait || "${ns}" == blocked:* ]] && st=waiting; fi
    printf '%-8s %-24s %s\n' "${st}" "${names[i]}" "${cmds[i]}"
  done
  exit 0
fi
refused=0
for i in "${!names[@]}"; do
  case "${state_of[${names[i]}]}" in
    changed|stale)
      more=$(done_after "${names[i]}"); more=${more// /, }
      echo "$(basename "$0"): error: $(why_not "${names[i]}")${more:+; the done jobs after ${names[i]} (${more}) \
would then be stale in turn: delete their .done too to run them again}" >&2
      refused=1 ;;
  esac
done
[[ ${refused} -eq 0 ]] || exit 1
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
