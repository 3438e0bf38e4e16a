#!/usr/bin/env bash
# The converged study's committed files (docs/results.md section 7) from its lanes' out-dirs: per-cell
# validation curves, result rows, merged studies, fairseq-kd-report summaries and the figures. Reads the
# lanes' files only (safe while lanes run: an unfinished cell gives a "(partial)" curve and no row; a cell with
# no validation yet gives no curve, and one exported earlier is removed; any other log_curve.py failure stops it).
#
#   bash docs/results/tools/export_converged.sh                        # every part whose out-dirs exist
#   bash docs/results/tools/export_converged.sh --stage 2 --stop-stage 2   # on-policy only
#
# Stages: 1 = 1.3M students (CE + every KD lane, merged; the 300-update ranking beside); 2 = on-policy
# (stage 4 of converged_study.sh: the variants, the choice on validation, CE / word-KD continued);
# 3 = noise (per op: lanes merged, each method's drop to noise with noise_drop.py); 4 = the 7.34M rung.
# Curves carry the code commit of their study from ${commits}: a study missing there is refused. Every
# finished study is also kept whole under RESULTS/studies/NAME (rows + gzipped hypotheses, keep_study.py),
# so a later session can pair new seeds with it after the machine and its exp/ are gone.
# The defaults are machine B's study (docs/results.md 7g); machine A's files (docs/results/converged_*,
# section 7-7f) came from out-dirs that no longer exist: --results docs/results would overwrite them.
set -euo pipefail

# ---- options ----------------------------------------------------------------------------------------
out_root=exp/converged                           # converged_study.sh --out-root
results=docs/results/converged_b                 # where the committed files go (machine B's study)
commits=docs/results/converged_b_code_commits.csv  # study,code_commit (the snapshot each lane ran)
main_gap=docs/results/main_3seeds_gap.json       # the 300-update students' summary (section 2d) put beside
extra_ref=exp/m30k/raw/test1.en                  # test_2017_flickr reference (the extra split)
ce_study=students_1m_laneG2                      # the 1.3M CE students every other students_1m_* lane is merged with
stage=1                                          # first part to export
stop_stage=4                                     # last part to export

. "$(dirname "${BASH_SOURCE[0]}")/../../../data_prep/common.sh"  # parse_flags, die, usage_error, log
parse_flags "$@"
[[ "${stage}" =~ ^[1-4]$ && "${stop_stage}" =~ ^[1-4]$ ]] || usage_error "--stage / --stop-stage: 1-4"
[[ -f "${commits}" ]] || die "${commits} not found: one line per study out-dir, study,code_commit"
tools="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
C=${out_root}; R=${results}
mkdir -p "${R}"

code_of() {  # study dir name -> its code commit
  local c; c=$(awk -F, -v s="$1" '$1 == s { print $2 }' "${commits}")
  [[ -n "${c}" ]] || die "${1}: no code commit in ${commits}; add 'study,commit' for it"
  echo "${c}"
}
teacher_bleu() {  # split file (results.csv / results.test1.csv) -> "beam5=B greedy=G" of the teacher
  awk -F, 'NR > 1 { printf "%s%s=%s", (n++ ? " " : ""), $8, $10 } END { print "" }' "$1"
}
teacher_beam5() { teacher_bleu "$1" | tr ' ' '\n' | sed -n 's/^beam5=//p'; }
name_of() {  # method -> the name tables and legends use
  case "$1" in
    none) echo "CE" ;; word.hid) echo "word-KD + hidden states" ;;
    onpolicy) echo "on-policy (lambda 0.5)" ;; onpolicy.l1) echo "on-policy (lambda 1)" ;;
    onpolicy.exp) echo "on-policy (lambda exp schedule)" ;;
    *_tnoisy) echo "${1%_tnoisy}-KD (noisy-source teacher)" ;; *) echo "${1}-KD" ;;
  esac
}
declare -A written=()  # file this run writes -> what it holds: two cells or lanes never share one file
claim() {  # file, what goes in it
  [[ -z ${written[$1]:-} || ${written[$1]} == "$2" ]] \
    || die "$1 would hold both ${written[$1]} and $2: run one lane per method and size (its seeds in one study) and one lr / arch per lane"
  written[$1]=$2
}
no_curve() {  # curve file, why: a cell with no validation (yet) has no curve; one exported before is an earlier run's
  if [[ -f $1 ]]; then rm -f "$1"; log "$1: removed, $2 (it was an earlier run's curve)"; fi
}
curves() {  # study dir, label suffix, file prefix, [model name]: one curve CSV per cell that has validations
  local S=$1 label=$2 prefix=$3 model=${4:-} code c name m s state out msg
  code=$(code_of "$(basename "${S}")")
  for c in "${S}"/cells/*/; do
    name=$(basename "${c}"); m=${name%%_noise*}; s=${name##*seed}
    state=$(grep -qF ",${name}," "${S}/results.csv" 2>/dev/null && echo "" || echo " (partial)")
    out="${R}/${prefix}_${m/./}_seed${s}_curve.csv"
    claim "${out}" "${c%/}"
    [[ -f ${c}train.log ]] || { no_curve "${out}" "${c}train.log is not there (the cell has not started)"; continue; }
    if msg=$(python "${tools}/log_curve.py" "${c}train.log" --set "model=${model:-$(name_of "${m}")} ${label} seed ${s}${state}" \
        --set "code_commit=${code}" 2>&1 > "${out}.tmp"); then
      mv "${out}.tmp" "${out}"
    else
      rm -f "${out}.tmp"
      [[ ${msg##*$'\n'} == "log_curve.py: no validation records in "* ]] \
        || die "log_curve.py failed on ${c}train.log, no curve exported (${out} left as it was):"$'\n'"${msg}"
      no_curve "${out}" "${c}train.log has no validation yet"
    fi
  done
}
finished() { [[ -s "$1/results.csv" ]]; }  # a study with at least one finished cell
keep() {  # a finished study's rows and gzipped hypotheses into RESULTS/studies/NAME
  python "${tools}/keep_study.py" "$1" "${R}/studies/$(basename "$1")"
}
report() {  # merged dir, split (test|test1), out name, [fairseq-kd-report flags]
  local M=$1 split=$2 name=$3; shift 3
  local csv=${M}/results.csv ref=() tb
  tb=$(teacher_bleu "${R}/converged_teacher_d0.3.csv")
  if [[ ${split} == test1 ]]; then
    csv=${M}/results.test1.csv; ref=(--test-ref "${extra_ref}"); tb=$(teacher_bleu "${R}/converged_teacher_d0.3.test1.csv")
  fi
  # shellcheck disable=SC2086
  fairseq-kd-report "${csv}" "${ref[@]}" --teacher-bleu ${tb} --out-dir "${M}/report_${name}" --no-plots "$@" > /dev/null
  cp "${M}/report_${name}/summary.json" "${R}/${name}_summary.json"
  cp "${M}/report_${name}/table.md" "${R}/${name}_table.md"
}
to() {  # to FILE CMD...: CMD's stdout into FILE, replaced only when CMD succeeds
  local f=$1; shift; "$@" > "${f}.tmp" && mv "${f}.tmp" "${f}"
}
plot() {  # png, curve CSVs (a glob that matched nothing: no plot)
  local png=$1; shift
  [[ $# -gt 0 && -f "$1" ]] || return 0
  python "${tools}/plot_curves.py" "${png}" "$@" > /dev/null
}
merge() {  # dst, sources...
  rm -rf "$1"; python "${tools}/merge_studies.py" "$@" > /dev/null
}

if [[ ${stage} -le 1 && ${stop_stage} -ge 1 ]]; then  # ---- the teacher, 1.3M students
  T=${C}/teacher_d0.3
  if [[ -d ${T}/cells ]]; then
    curves "${T}" "6.55M dropout 0.3" converged_teacher_d0.3 teacher
    if finished "${T}"; then
      keep "${T}"
      cp "${T}/results.csv" "${R}/converged_teacher_d0.3.csv"; cp "${T}/results.test1.csv" "${R}/converged_teacher_d0.3.test1.csv"
    fi
  fi
  ce=${C}/${ce_study}
  [[ -d ${ce}/cells ]] || die "${ce}: no CE students (stage 1 merges every 1.3M lane with them; --ce-study)"
  lane() {  # a 1.3M study, the name of its rows file: its curves; once a cell has finished, its rows, kept whole
    curves "$1" "1.3M lr 0.003" converged
    finished "$1" || return 0
    claim "${R}/converged_$2_1m.csv" "$1"
    cp "$1/results.csv" "${R}/converged_$2_1m.csv"; cp "$1/results.test1.csv" "${R}/converged_$2_1m.test1.csv"
    keep "$1"; srcs+=("$1")
  }
  srcs=()
  lane "${ce}" ce
  for S in "${C}"/students_1m_*/; do
    S=${S%/}; [[ ${S} != "${ce}" && -d ${S}/cells ]] || continue
    m=$(ls "${S}/cells" | sed 's/_noise.*//' | sort -u)
    [[ ${m} != *$'\n'* ]] || die "${S}: cells of several methods ($(echo ${m})): stage 1 keeps one rows file per method; run one lane per method"
    lane "${S}" "${m/./}"
  done
  if [[ -f ${R}/converged_teacher_d0.3.csv && ${#srcs[@]} -gt 0 && ${srcs[0]} == "${ce}" ]]; then
    merge "${C}/merged_1m" "${srcs[@]}"
    report "${C}/merged_1m" test converged_1m; report "${C}/merged_1m" test1 converged_1m_test1
    if grep -q '^word,' "${C}/merged_1m/results.csv"; then  # word-KD finished (CE alone: no comparison yet)
      report "${C}/merged_1m" test converged_1m_vs_word --baseline word
      report "${C}/merged_1m" test1 converged_1m_vs_word_test1 --baseline word
    fi
    if grep -qv '^\(none,\|method,\)' "${C}/merged_1m/results.csv"; then  # a KD method finished: rankings to compare
      to "${R}/converged_1m_beside.md" python "${tools}/rank_beside.py" "300 updates=${main_gap}" "converged=${R}/converged_1m_summary.json" \
        --search beam5 --teacher-bleu "300 updates=35.43" --teacher-bleu "converged=$(teacher_beam5 "${R}/converged_teacher_d0.3.csv")"  # 35.43: section 2d's teacher
    fi
    log "1.3M: merged ${srcs[*]}"
  else
    log "1.3M: curves and finished studies only (the tables need the teacher's rows and a finished CE cell)"
  fi
  main_curves=()  # the teacher's, CE's and the 1.3M KD students' (not the lr choice, on-policy, noise, 7.34M)
  for f in "${R}"/converged_*_curve.csv; do
    [[ -f ${f} && ! ${f} =~ (lr_selection|_onpolicy_|_noise_|_7m_) ]] && main_curves+=("${f}")
  done
  plot "${R}/converged_curves.png" "${main_curves[@]}"
fi

if [[ ${stage} -le 2 && ${stop_stage} -ge 2 ]]; then  # ---- on-policy from the CE student
  srcs=()
  for S in "${C}"/onpolicy_*/; do
    S=${S%/}; [[ -d ${S}/cells ]] || continue
    curves "${S}" "continued from CE" converged_onpolicy
    if finished "${S}"; then keep "${S}"; srcs+=("${S}"); fi
    [[ -f ${S}/choice.json ]] && cp "${S}/choice.json" "${R}/converged_onpolicy_choice.json"
  done
  plot "${R}/converged_onpolicy_curves.png" "${R}"/converged_onpolicy_*_curve.csv
  if [[ ${#srcs[@]} -gt 0 ]]; then
    merge "${C}/merged_onpolicy" "${srcs[@]}"
    cp "${C}/merged_onpolicy/results.csv" "${R}/converged_onpolicy.csv"
    cp "${C}/merged_onpolicy/results.test1.csv" "${R}/converged_onpolicy.test1.csv"
    report "${C}/merged_onpolicy" test converged_onpolicy; report "${C}/merged_onpolicy" test1 converged_onpolicy_test1
    if grep -q '^word,' "${C}/merged_onpolicy/results.csv"; then
      report "${C}/merged_onpolicy" test converged_onpolicy_vs_word --baseline word
      report "${C}/merged_onpolicy" test1 converged_onpolicy_vs_word_test1 --baseline word
    fi
    log "on-policy: merged ${srcs[*]}"
  fi
fi

if [[ ${stage} -le 3 && ${stop_stage} -ge 3 ]]; then  # ---- noise 0.3, clean- and noisy-source teachers
  for op in substitution deletion swap; do
    srcs=()
    for S in "${C}"/noise_${op}_*/; do
      S=${S%/}; [[ -d ${S}/cells && ${S} != */noise_${op}_merged ]] || continue
      curves "${S}" "1.3M ${op} 0.3" "converged_noise_${op}"
      if finished "${S}"; then keep "${S}"; srcs+=("${S}"); fi
    done
    plot "${R}/converged_noise_${op}_curves.png" "${R}"/converged_noise_${op}_*_curve.csv
    [[ ${#srcs[@]} -gt 0 ]] || continue
    M=${C}/noise_${op}_merged
    merge "${M}" "${srcs[@]}"
    cp "${M}/results.csv" "${R}/converged_noise_${op}.csv"; cp "${M}/results.test1.csv" "${R}/converged_noise_${op}.test1.csv"
    pairs=$(python - "${M}/results.csv" <<'EOF'
import csv, sys
have = {r["method"] for r in csv.DictReader(open(sys.argv[1]))}
print(" ".join(p for p in ("word:seq", "word_tnoisy:seq_tnoisy", "word:word_tnoisy", "seq:seq_tnoisy")
               if set(p.split(":")) <= have))
EOF
)
    if [[ -n ${pairs} ]]; then
      # shellcheck disable=SC2086
      to "${R}/converged_noise_${op}_drop.md" python "${tools}/noise_drop.py" --clean "${C}/merged_1m" --noisy "${M}" \
        --noise 0.3 --pairs ${pairs} --json "${R}/converged_noise_${op}_drop.json"
      # shellcheck disable=SC2086
      to "${R}/converged_noise_${op}_drop.test1.md" python "${tools}/noise_drop.py" --clean "${C}/merged_1m" \
        --noisy "${M}" --noise 0.3 --pairs ${pairs} --split test1 --test-ref "${extra_ref}" \
        --json "${R}/converged_noise_${op}_drop.test1.json"
    fi
    log "noise ${op}: merged ${srcs[*]}"
  done
fi

if [[ ${stage} -le 4 && ${stop_stage} -ge 4 ]]; then  # ---- the 7.34M rung
  srcs=()
  for S in "${C}"/students_7m_*/; do
    S=${S%/}; [[ -d ${S}/cells && ${S} != */students_7m_merged ]] || continue
    tag=$(basename "${S}"); tag=${tag#students_7m_}  # d0.3, word_d0.3, ...
    curves "${S}" "7.34M dropout ${tag##*d}" "converged_7m_${tag}"
    if finished "${S}"; then keep "${S}"; srcs+=("${S}"); fi
  done
  plot "${R}/converged_7m_curves.png" "${R}"/converged_7m_*_curve.csv
  if [[ -f ${C}/students_7m_dropout.txt ]]; then
    d=$(cat "${C}/students_7m_dropout.txt")
    cp "${C}/students_7m_dropout_choice.json" "${R}/converged_7m_dropout_choice.json"
    # the rung's study: CE at the chosen dropout + the KD lanes run with it (the other dropout's CE only chose)
    kept=(); for S in "${srcs[@]}"; do [[ ${S} == *_d${d} ]] && kept+=("${S}"); done
    if [[ ${#kept[@]} -gt 0 ]]; then
      merge "${C}/students_7m_merged" "${kept[@]}"
      cp "${C}/students_7m_merged/results.csv" "${R}/converged_7m.csv"
      cp "${C}/students_7m_merged/results.test1.csv" "${R}/converged_7m.test1.csv"
      report "${C}/students_7m_merged" test converged_7m; report "${C}/students_7m_merged" test1 converged_7m_test1
    fi
  fi
  log "7.34M: studies ${srcs[*]:-none finished}"
fi
