#!/usr/bin/env bash
# Shared helpers for data_prep/prepare_*.sh (sourced, not run). Defines:
#   parse_flags "$@"   ESPnet-style: --foo-bar VALUE sets the variable foo_bar declared above
#   log / die / usage_error, prep (python -m fairseq_kd.prep), check_settings, binarize
#   split_words / quote_word: a flag-list option (--extra "...") as words, quotes honoured (a path with a space)
# shellcheck disable=SC2034

_prep_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${_prep_repo}${PYTHONPATH:+:${PYTHONPATH}}"

log() { echo "[$(basename "$0") $(date -u +%H:%M:%S)] $*" >&2; }
die() { echo "$(basename "$0"): error: $*" >&2; exit 1; }
usage_error() { echo "$(basename "$0"): usage error: $*" >&2; echo "run with --help for the options" >&2; exit 2; }

# usage: the script's header comment, then its option block (the variables under "# ---- options").
usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  echo "options:"
  local name rest def
  awk '/^# ---- options/ { f = 1; next } f && !/^[a-z_][a-z0-9_]*=/ { exit } f' "$0" | while IFS= read -r line; do
    name="${line%%=*}"; rest="${line#*=}"
    def="${rest%%#*}"; def="${def%"${def##*[![:space:]]}"}"
    printf '  --%-18s %s\n' "${name//_/-}" "${rest#*# } (default: ${def})"
  done
}

# The interpreter: $PYTHON, else python3 on PATH, else the repo's .venv (whichever imports fairseq_kd).
pick_python() {
  local cand
  for cand in "${PYTHON:-}" "$(command -v python3 || true)" "${_prep_repo}/.venv/bin/python"; do
    if [[ -n "${cand}" ]] && "${cand}" -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('fairseq_kd') and u.find_spec('fairseq_cli') and u.find_spec('sentencepiece')))" >/dev/null 2>&1; then
      echo "${cand}"; return 0
    fi
  done
  die "no python with fairseq, sentencepiece and fairseq_kd found: activate the venv (scripts/setup_env.sh) or set PYTHON"
}

# parse_flags "$@": every --name value (or --name=value) must match a variable declared by the caller.
parse_flags() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --*=*) local key="${1%%=*}" val="${1#*=}"; shift ;;
      --*) [[ $# -ge 2 ]] || usage_error "$1 needs a value"
           local key="$1" val="$2"; shift 2 ;;
      *) usage_error "unexpected argument '$1'" ;;
    esac
    local name="${key#--}"; name="${name//-/_}"
    if ! declare -p "${name}" >/dev/null 2>&1 || [[ "${name}" == _* ]]; then
      usage_error "unknown option ${key}"
    fi
    printf -v "${name}" '%s' "${val}"
  done
}

# split_words NAME OPTION STRING: the array NAME = the words of STRING, a flag list given as one option
#   (--extra, --arch-args, --teacher-args), split as a shell would and as fairseq-kd-study splits --train-args
#   (Python's shlex): blanks separate, quotes and backslashes group, nothing is expanded (no globs, no $...).
#   A path with a space inside such a string is quoted: --extra "--teacher-cache '/home/ann/My Experiments/c'".
#   An unbalanced quote is a usage error naming OPTION (exit 2).
split_words() {
  local -n _split_words_out="$1"
  mapfile -d '' -t _split_words_out < <("${python:-python3}" -c 'import shlex, sys
sys.stdout.write("".join(w + "\0" for w in shlex.split(sys.argv[1])))' "$3" 2>/dev/null && printf ok || printf failed)
  [[ ${#_split_words_out[@]} -gt 0 && "${_split_words_out[-1]}" == ok ]] || usage_error "$2 '$3' is not a list of shell words (an unbalanced quote?): quote a path with spaces whole, '...'"
  unset '_split_words_out[-1]'
}

# quote_word WORD: WORD single-quoted, one word for split_words (a path put inside a flag string).
quote_word() { local q="'"; printf "'%s'" "${1//${q}/${q}\\${q}${q}}"; }

# prep CMD ...: `python -m fairseq_kd.prep CMD ...` without running fairseq_kd/__init__.py, which
# imports torch and fairseq to register the plugins (about 4 s a call, 60 ms without): the text
# steps need only fairseq_kd.prep and fairseq_kd.errors (and import fairseq themselves if needed).
prep() {
  "${python}" -c 'import sys, types
pkg = types.ModuleType("fairseq_kd"); pkg.__path__ = [sys.argv[1]]; sys.modules["fairseq_kd"] = pkg
from fairseq_kd.prep.__main__ import main
sys.exit(main(sys.argv[2:]))' "${_prep_repo}/fairseq_kd" "$@"
}

# check_settings DIR "k=v ...": refuse to reuse DIR prepared with different settings.
check_settings() {
  local dir="$1" settings="$2" stamp="$1/.prep_settings"
  if [[ -f "${stamp}" && "$(cat "${stamp}")" != "${settings}" ]]; then
    die "${dir} was prepared with other settings
  stored: $(cat "${stamp}")
  now:    ${settings}
fix: use a new --out-dir, or delete ${dir} to rebuild it"
  fi
}

# save_settings DIR "k=v ...": record the settings once the first outputs exist.
save_settings() { mkdir -p "$1"; [[ -f "$1/.prep_settings" ]] || printf '%s' "$2" > "$1/.prep_settings"; }

# binarize SPM_DIR BIN_DIR SRC TGT WORKERS TEST_PREFS: fairseq-preprocess --joined-dictionary into
# a temp folder that replaces BIN_DIR only when complete.
binarize() {
  local spm_dir="$1" bin_dir="$2" src="$3" tgt="$4" workers="$5" testpref="$6"
  local tmp="${bin_dir}.tmp$$"
  rm -rf "${tmp}"
  "${python}" -m fairseq_cli.preprocess --source-lang "${src}" --target-lang "${tgt}" \
    --trainpref "${spm_dir}/train" --validpref "${spm_dir}/valid" --testpref "${testpref}" \
    --destdir "${tmp}" --joined-dictionary --workers "${workers}" > "${tmp}.log" 2>&1 \
    || { cat "${tmp}.log" >&2; rm -rf "${tmp}" "${tmp}.log"; die "fairseq-preprocess failed (log above)"; }
  mv "${tmp}.log" "${tmp}/preprocess.log"
  rm -rf "${bin_dir}"
  mv "${tmp}" "${bin_dir}"
}

# guard_outputs INPUT_FILE...: refuse (exit 2) before anything is written when a pipeline output
# (DIR/raw, spm*, bin, the settings stamp) is, contains or lies inside an input file, under any
# spelling (symlinks, .., relative paths): fairseq_kd.guard via `prep guard`.
guard_outputs() {
  local args=() p
  for p in "$@"; do [[ -n "${p}" ]] && args+=(--input "${p}"); done
  for p in raw spm spm.model spm.vocab bin .prep_settings; do args+=(--output "${out_dir}/${p}"); done
  prep guard --tool "$(basename "$0")" "${args[@]}"
}

# lock_out_dir: one run per --out-dir: an flock on DIR/.fairseq-kd.lock (the lock fairseq_kd.guard.DirLock
# takes), held until the script exits however it exits (even kill -9); a second run exits 2 naming the pid.
lock_out_dir() {
  command -v flock >/dev/null || { log "WARNING: no flock(1) here: ${out_dir} is not locked"; return 0; }
  mkdir -p "${out_dir}"
  local lock="${out_dir}/.fairseq-kd.lock"
  exec 9<>"${lock}"
  if ! flock -n 9; then
    echo "$(basename "$0"): error: ${out_dir} is in use by another run (pid $(cut -d' ' -f1 "${lock}" 2>/dev/null)," \
      "lock ${lock}); wait for it to finish or stop it, or choose another --out-dir" >&2
    exit 2
  fi
  echo "$$ $(basename "$0")" > "${lock}"
}

# all_exist FILE...: true when every file exists (a stage's outputs).
all_exist() { local f; for f in "$@"; do [[ -e "${f}" ]] || return 1; done; }

# inputs_stamp FILE...: what a stage read (size, mtime, path per existing file).
inputs_stamp() { local f; for f in "$@"; do [[ -e "${f}" ]] && stat -L -c '%s %Y %n' "${f}"; done; return 0; }

# any_empty FILE...: true when one of the files is empty (a stage that produced nothing).
any_empty() { local f; for f in "$@"; do [[ -s "${f}" ]] || return 0; done; return 1; }

# stage1_current INPUTS...: true when the caller's raw_files exist and were made from these inputs as they
# are now (size, mtime), recorded in raw/.inputs; otherwise drops raw/.inputs and what stages 2-4 made
# from the old text (spm model, pieces, bin/), which is stale once stage 1 runs again.
stage1_current() {
  local stamp="${raw}/.inputs"
  if all_exist "${raw_files[@]}" && ! any_empty "${raw_files[@]}" && [[ ! -f "${stamp}" ]]; then
    inputs_stamp "$@" > "${stamp}"  # made before inputs were stamped: taken as current
  fi
  if all_exist "${raw_files[@]}" && [[ -f "${stamp}" && "$(cat "${stamp}")" == "$(inputs_stamp "$@")" ]]; then
    return 0
  fi
  rm -rf "${stamp}" "${out_dir}/spm.model" "${out_dir}/spm.vocab" "${out_dir}/spm" "${out_dir}/bin"
  return 1
}

# stage1_done INPUTS...: stage 1 completed for these inputs (written last).
stage1_done() { inputs_stamp "$@" > "${raw}/.inputs"; }

# raw_files_for DIR: sets the global array raw_files to DIR/<split>.<src> DIR/<split>.<tgt>
# for every split in the caller's splits array.
raw_files_for() { local s; raw_files=(); for s in "${splits[@]}"; do raw_files+=("$1/${s}.${src}" "$1/${s}.${tgt}"); done; }

# spm_encode_binarize: stages 2-4 shared by every corpus. Reads the caller's variables:
#   out_dir src tgt vocab_size spm_model_type workers stage stop_stage, splits (array: train
#   valid test [test1 ...]); expects DIR/raw/<split>.<lang>; writes DIR/spm.model, DIR/spm/, DIR/bin/.
spm_encode_binarize() {
  local raw="${out_dir}/raw" spm_dir="${out_dir}/spm" bin="${out_dir}/bin" s l
  local spm_files=() enc_pairs=()
  for s in "${splits[@]}"; do
    for l in "${src}" "${tgt}"; do
      spm_files+=("${spm_dir}/${s}.${l}")
      enc_pairs+=(--pair "${raw}/${s}.${l}" "${spm_dir}/${s}.${l}")
    done
  done
  if [[ ${stage} -le 2 && 2 -le ${stop_stage} ]]; then
    if all_exist "${out_dir}/spm.model"; then
      log "stage 2: skip (${out_dir}/spm.model exists)"
    else
      log "stage 2: training a joint sentencepiece model (vocab ${vocab_size}, ${spm_model_type})"
      prep spm-train --input "${raw}/train.${src}" "${raw}/train.${tgt}" --model-prefix "${out_dir}/spm" \
        --vocab-size "${vocab_size}" --model-type "${spm_model_type}" --threads "${workers}" >&2
    fi
  fi
  if [[ ${stage} -le 3 && 3 -le ${stop_stage} ]]; then
    if all_exist "${spm_files[@]}"; then
      log "stage 3: skip (pieces exist in ${spm_dir})"
    else
      log "stage 3: encoding into ${spm_dir}"
      prep spm-encode --model "${out_dir}/spm.model" "${enc_pairs[@]}" >/dev/null
    fi
  fi
  if [[ ${stage} -le 4 && 4 -le ${stop_stage} ]]; then
    if all_exist "${bin}/dict.${src}.txt" "${bin}/dict.${tgt}.txt"; then
      log "stage 4: skip (${bin} exists)"
    else
      log "stage 4: fairseq-preprocess --joined-dictionary into ${bin}"
      local testpref="" split  # comma-separated test prefixes (a path is data here, never a printf format)
      for split in "${splits[@]:2}"; do testpref+="${spm_dir}/${split},"; done
      binarize "${spm_dir}" "${bin}" "${src}" "${tgt}" "${workers}" "${testpref%,}"
    fi
  fi
}

# commit_dir TMP DEST: move a completed temp folder's files into DEST (created if needed).
commit_dir() {
  local tmp="$1" dest="$2" f
  mkdir -p "${dest}"
  for f in "${tmp}"/*; do mv -f "${f}" "${dest}/"; done
  rm -rf "${tmp}"
}

# ---- settings stamps of finished steps (scripts/main.sh, scripts/train_student.sh, scripts/recipes) ----
# A step's stamp is a file of "key=value" lines: the options that shape its output and the identity of the
# files it read (inputs_stamp). A finished step is reused only when its stamp records the settings of this
# run; scripts/distill.sh (.distill_settings) and the data scripts (.prep_settings, raw/.inputs) do the same.

# stamp_files KEY DIR PATTERN...: the line "KEY=..." naming the files DIR/PATTERN (globs) that exist by
#   size, mtime and name (inputs_stamp, read from inside DIR: another spelling of DIR gives the same line);
#   name KEY *_file or *_files (stamp_changes then says "changed" rather than printing the values).
stamp_files() {
  local key="$1" dir="$2"
  shift 2
  printf '%s=%s\n' "${key}" "$(cd "${dir}" 2>/dev/null && shopt -s nullglob && {
    local p names=()
    # shellcheck disable=SC2206  # the patterns are globs
    for p in "$@"; do names+=(${p}); done
    inputs_stamp "${names[@]+"${names[@]}"}" | paste -sd ';' -
  })"
}

# stamp_flags SKIP ARG...: a command line's flags as "key=value" lines (--lr=5e-4, --cpu=), the words
#   before the first flag under "args"; the flags named in SKIP ("--save-dir --user-dir") are left out:
#   the paths of outputs or of the code, and what the caller records by file identity instead.
stamp_flags() {
  local skip=" $1 " key="" val="" w
  shift
  for w in "$@" --; do
    if [[ "${w}" =~ ^--?[A-Za-z] || "${w}" == -- ]]; then
      [[ -z "${key}" || "${skip}" == *" ${key} "* ]] || printf '%s=%s\n' "${key}" "${val# }"
      key="${w}" val=""
    else
      key="${key:-args}" val="${val} ${w}"
    fi
  done
}

# stamp_changes STAMP SETTINGS: what differs between the stamp file and SETTINGS, on one line
#   ("--max-update 100 -> 750, --fp16 added, data_files changed": values of stamp_files lines (keys
#   named *_file or *_files) and values longer than 40 characters are not shown; six changes, then a count).
stamp_changes() {
  [[ -f "$1" ]] || { echo "settings unknown: made by an earlier version of $(basename "$0"), which recorded none"; return 0; }
  printf '%s\n' "$2" | awk '
    function split_kv(line) { i = index(line, "="); k = i ? substr(line, 1, i - 1) : line; v = i ? substr(line, i + 1) : "" }
    function show(v) { return v == "" ? "(none)" : v }
    function add(s) { if (++m <= 6) out = out (out == "" ? "" : ", ") s }
    { split_kv($0); if (!(k in seen)) { seen[k] = 1; keys[++n] = k } }
    FILENAME == ARGV[1] { old[k] = v; next }
    { now[k] = v }
    END {
      for (j = 1; j <= n; j++) {
        k = keys[j]
        if ((k in old) && (k in now) && old[k] == now[k]) continue
        if (!(k in old)) { add(k " added"); continue }
        if (!(k in now)) { add(k " dropped"); continue }
        a = old[k]; b = now[k]
        if (k ~ /_files?$/ || length(a) > 40 || length(b) > 40) add(k " changed")
        else add(k " " show(a) " -> " show(b))
      }
      print (out == "" ? "the same keys, in another order" : out) (m > 6 ? " and " m - 6 " more" : "")
    }' "$1" -
}

# stamp_current STAMP SETTINGS: true when the stamp file records exactly SETTINGS.
stamp_current() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

# refuse_stale WHAT STAMP SETTINGS FIX: exit 2 with one line: WHAT (a finished output) was made with other
#   settings than SETTINGS (what changed, from STAMP), and FIX (a new output dir, or delete the old one).
refuse_stale() {
  echo "$(basename "$0"): error: $1 was made with other settings than this run's ($(stamp_changes "$2" "$3")); $4" >&2
  exit 2
}

# teacher_beam DECODING BEAM: the teacher's beam for scripts/distill.sh and scripts/train_student.sh: BEAM if
#   given, else 5, or 1 for sampling (one sample per sentence, fairseq-kd-study's sampling); a sampling BEAM > 1
#   (fairseq keeps the best of BEAM samples) is said on stderr.
teacher_beam() {
  local decoding="$1" beam="$2"
  if [[ -z "${beam}" ]]; then
    [[ "${decoding}" == sampling ]] && beam=1 || beam=5
  elif [[ "${decoding}" == sampling && "${beam}" != 1 ]]; then
    echo "$0: --decoding sampling --beam ${beam}: the teacher draws ${beam} samples per sentence and keeps the" \
      "best-scoring one (best of ${beam}); fairseq-kd-study's sampling draws one (--beam 1, this script's default)" >&2
  fi
  echo "${beam}"
}
