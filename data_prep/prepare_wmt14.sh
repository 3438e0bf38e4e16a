#!/usr/bin/env bash
# WMT14 de-en: clean the training corpora (1-250 words, ratio 1.5), joint sentencepiece,
# valid = newstest2013, test = newstest2014 (full, from SGML), binarize.
#
#   bash data_prep/prepare_wmt14.sh --out-dir DIR \
#        --train-corpora /work/shared/data/wmt14/europarl-v7.first20k --test-dir /work/shared/data/wmt14 \
#        [--valid-dir DIR_WITH_newstest2013] [--vocab-size 32000]
#   bash data_prep/prepare_wmt14.sh --out-dir DIR     (downloads Europarl v7, CommonCrawl, News
#        Commentary v9, dev and test-full from statmt.org into DIR/orig when online)
#
# --train-corpora: comma list of prefixes P (files P.SRC and P.TGT). newstest2013 is read from
# --valid-dir as newstest2013.{SRC,TGT} or newstest2013-{src.SRC,ref.TGT}.sgm; when it is absent
# (offline) the script says so and, with --valid-fallback carve (default), carves about
# --carve-valid pairs (every N-th) out of the cleaned training data; --valid-fallback error stops.
# Output layout as prepare_multi30k.sh: DIR/raw, DIR/spm.model, DIR/spm, DIR/bin.
set -euo pipefail

# ---- options: each variable is also a --kebab-case flag ----
train_corpora=""            # comma list of parallel corpus prefixes (P.SRC, P.TGT); empty: download
test_dir=""                 # folder with newstest2014-deen-{src.SRC,ref.TGT}.sgm (default: DIR/orig/test-full)
valid_dir=""                # folder with newstest2013 (text or SGML) (default: DIR/orig/dev)
valid_fallback=carve        # carve | error: what to do when newstest2013 is absent
carve_valid=3000            # about this many carved valid pairs (valid_fallback=carve)
out_dir=""                  # output folder (required)
vocab_size=32000            # joint sentencepiece vocabulary size
spm_model_type=unigram      # unigram | bpe
src=de                      # source language
tgt=en                      # target language
min_len=1                   # cleaning (train only): min words per side
max_len=250                 # cleaning (train only): max words per side
ratio=1.5                   # cleaning (train only): max length ratio between sides
workers=2                   # fairseq-preprocess workers
stage=0                     # first stage to run
stop_stage=100              # last stage to run
urls=http://statmt.org/wmt13/training-parallel-europarl-v7.tgz,http://statmt.org/wmt13/training-parallel-commoncrawl.tgz,http://statmt.org/wmt14/training-parallel-nc-v9.tgz,http://statmt.org/wmt14/dev.tgz,http://statmt.org/wmt14/test-full.tgz  # downloaded when --train-corpora is empty

# shellcheck source=data_prep/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "$@"
[[ -n "${out_dir}" ]] || usage_error "--out-dir is required"
[[ "${vocab_size}" =~ ^[0-9]+$ ]] || usage_error "--vocab-size must be a positive integer"
[[ "${valid_fallback}" == carve || "${valid_fallback}" == error ]] || usage_error "--valid-fallback must be carve or error"
python="$(pick_python)"
splits=(train valid test)
orig="${out_dir}/orig"

# ---- stage 0: download the public corpora when no --train-corpora ----
if [[ -z "${train_corpora}" ]]; then
  pair="${src}-${tgt}"; [[ "${src}" < "${tgt}" ]] || pair="${tgt}-${src}"
  train_corpora="${orig}/training/europarl-v7.${pair},${orig}/commoncrawl.${pair},${orig}/training/news-commentary-v9.${pair}"
  if [[ ${stage} -le 0 && 0 -le ${stop_stage} ]]; then
    IFS=, read -r -a url_list <<< "${urls}"
    for u in "${url_list[@]}"; do
      [[ -f "${orig}/.$(basename "${u}").done" ]] && continue
      log "stage 0: downloading ${u}"
      prep download --url "${u}" --out "${orig}/$(basename "${u}")" --untar "${orig}" >/dev/null
      touch "${orig}/.$(basename "${u}").done"
    done
  fi
fi
test_dir="${test_dir:-${orig}/test-full}"
valid_dir="${valid_dir:-${orig}/dev}"
IFS=, read -r -a _corpora <<< "${train_corpora}"
_corpus_files=(); for c in "${_corpora[@]}"; do _corpus_files+=("${c}.${src}" "${c}.${tgt}"); done
guard_outputs "${_corpus_files[@]}" "${test_dir}/newstest2014-deen-src.${src}.sgm" \
  "${test_dir}/newstest2014-deen-ref.${tgt}.sgm" "${valid_dir}/newstest2013.${src}" "${valid_dir}/newstest2013.${tgt}" \
  "${valid_dir}/newstest2013-src.${src}.sgm" "${valid_dir}/newstest2013-ref.${tgt}.sgm"
lock_out_dir
settings="train_corpora=${train_corpora} test_dir=${test_dir} valid_dir=${valid_dir} valid_fallback=${valid_fallback} carve_valid=${carve_valid} vocab_size=${vocab_size} spm_model_type=${spm_model_type} src=${src} tgt=${tgt} min_len=${min_len} max_len=${max_len} ratio=${ratio}"
check_settings "${out_dir}" "${settings}"

raw="${out_dir}/raw"
raw_files_for "${raw}"

# ---- stage 1: test from SGML, cleaned train, valid (newstest2013 or carved), in a temp folder ----
if [[ ${stage} -le 1 && 1 -le ${stop_stage} ]]; then
  _stage1_inputs=("${_corpus_files[@]}" "${test_dir}"/newstest2014-deen-*.sgm "${valid_dir}"/newstest2013*)
  if stage1_current "${_stage1_inputs[@]}"; then
    log "stage 1: skip (cleaned text exists in ${raw}, inputs unchanged)"
  else
    tmp="${out_dir}/.raw.tmp$$"
    trap 'rm -rf "${tmp}"' EXIT
    log "stage 1: test = newstest2014 from ${test_dir}"
    prep sgm --src "${test_dir}/newstest2014-deen-src.${src}.sgm" --ref "${test_dir}/newstest2014-deen-ref.${tgt}.sgm" \
      --out-src "${tmp}/test.${src}" --out-tgt "${tmp}/test.${tgt}" >&2

    valid_kind=""
    if [[ -f "${valid_dir}/newstest2013.${src}" && -f "${valid_dir}/newstest2013.${tgt}" ]]; then
      valid_kind=text
    elif [[ -f "${valid_dir}/newstest2013-src.${src}.sgm" && -f "${valid_dir}/newstest2013-ref.${tgt}.sgm" ]]; then
      valid_kind=sgm
    elif [[ "${valid_fallback}" == error ]]; then
      die "newstest2013 not found in ${valid_dir} (newstest2013.${src}/.${tgt} or newstest2013-src.${src}.sgm/-ref.${tgt}.sgm):
pass --valid-dir with it (from http://statmt.org/wmt14/dev.tgz), or --valid-fallback carve"
    else
      log "WARNING: newstest2013 not found in ${valid_dir} (offline?): carving about ${carve_valid} valid pairs"
      log "WARNING: out of the cleaned training data (every N-th pair); results are not comparable to papers"
    fi

    IFS=, read -r -a corpora <<< "${train_corpora}"
    clean_args=()
    for k in "${!corpora[@]}"; do
      p="${corpora[${k}]}"
      clean_args+=(--pair "${p}.${src}" "${p}.${tgt}" "${tmp}/part${k}.${src}" "${tmp}/part${k}.${tgt}")
    done
    [[ "${valid_kind}" == text ]] && clean_args+=(--eval-pair "${valid_dir}/newstest2013.${src}" \
      "${valid_dir}/newstest2013.${tgt}" "${tmp}/valid.${src}" "${tmp}/valid.${tgt}")
    log "stage 1: cleaning ${#corpora[@]} training corpora"
    prep clean --min-len "${min_len}" --max-len "${max_len}" --ratio "${ratio}" "${clean_args[@]}" >&2
    [[ "${valid_kind}" == sgm ]] && prep sgm --src "${valid_dir}/newstest2013-src.${src}.sgm" \
      --ref "${valid_dir}/newstest2013-ref.${tgt}.sgm" --out-src "${tmp}/valid.${src}" --out-tgt "${tmp}/valid.${tgt}" >&2
    for l in "${src}" "${tgt}"; do
      for k in "${!corpora[@]}"; do cat "${tmp}/part${k}.${l}"; done > "${tmp}/all.${l}"
      rm -f "${tmp}"/part*."${l}"
    done
    if [[ -z "${valid_kind}" ]]; then
      prep split-every --src "${tmp}/all.${src}" --tgt "${tmp}/all.${tgt}" --n-valid "${carve_valid}" \
        --src-lang "${src}" --tgt-lang "${tgt}" --out-dir "${tmp}" >&2
      rm -f "${tmp}/all.${src}" "${tmp}/all.${tgt}"
    else
      mv "${tmp}/all.${src}" "${tmp}/train.${src}"; mv "${tmp}/all.${tgt}" "${tmp}/train.${tgt}"
    fi
    commit_dir "${tmp}" "${raw}"
    trap - EXIT
    stage1_done "${_stage1_inputs[@]}"
  fi
  save_settings "${out_dir}" "${settings}"
fi

# ---- stages 2-4: joint sentencepiece, encode every split, binarize (data_prep/common.sh) ----
spm_encode_binarize
log "done: ${out_dir}"
