#!/usr/bin/env bash
# IWSLT14 de-en (TED, WIT3 release) with the standard split of fairseq's prepare-iwslt14.sh:
# train.tags meta lines removed, cleaned (1-175 words, ratio 1.5), valid = every 23rd cleaned
# training pair, train = the rest, test = dev2010 + TEDX dev2012 + tst2010-2012 (6,750 pairs).
# Text stays cased and untokenized (sentencepiece instead of Moses + BPE).
#
#   bash data_prep/prepare_iwslt14.sh --data-dir DIR_WITH_train.tags --out-dir DIR [--vocab-size 10000]
#   bash data_prep/prepare_iwslt14.sh --out-dir DIR      (downloads --url into DIR/orig when online)
#
# --data-dir holds train.tags.de-en.{de,en} and IWSLT14.TED*.de-en.{de,en}.xml (the test XML may
# sit in a separate --test-dir, e.g. /work/shared/data/iwslt14). Output layout as prepare_multi30k.sh:
# DIR/raw, DIR/spm.model, DIR/spm, DIR/bin. Each stage is skipped when its outputs exist.
set -euo pipefail

# ---- options: each variable is also a --kebab-case flag ----
data_dir=""                 # folder with train.tags.SRC-TGT.{SRC,TGT} (and the XML unless --test-dir)
test_dir=""                 # folder with the IWSLT14.*.xml test sets (default: --data-dir)
out_dir=""                  # output folder (required)
vocab_size=10000            # joint sentencepiece vocabulary size
spm_model_type=unigram      # unigram | bpe
test_sets=IWSLT14.TED.dev2010,IWSLT14.TEDX.dev2012,IWSLT14.TED.tst2010,IWSLT14.TED.tst2011,IWSLT14.TED.tst2012  # concatenated into test
src=de                      # source language
tgt=en                      # target language
valid_every=23              # valid = every N-th cleaned training pair
min_len=1                   # cleaning (train only): min words per side
max_len=175                 # cleaning (train only): max words per side
ratio=1.5                   # cleaning (train only): max length ratio between sides
workers=2                   # fairseq-preprocess workers
stage=0                     # first stage to run
stop_stage=100              # last stage to run
url=http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz  # WIT3 2014-01 de-en archive (fairseq mirror)

# shellcheck source=data_prep/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "$@"
[[ -n "${out_dir}" ]] || usage_error "--out-dir is required"
[[ "${vocab_size}" =~ ^[0-9]+$ ]] || usage_error "--vocab-size must be a positive integer"
[[ "${valid_every}" =~ ^[1-9][0-9]*$ ]] || usage_error "--valid-every must be a positive integer"
python="$(pick_python)"
pair="${src}-${tgt}"
splits=(train valid test)

# ---- stage 0: download and unpack the archive when no --data-dir ----
if [[ -z "${data_dir}" ]]; then
  data_dir="${out_dir}/orig/${pair}"
  if [[ ${stage} -le 0 && 0 -le ${stop_stage} && ! -f "${data_dir}/train.tags.${pair}.${src}" ]]; then
    log "stage 0: downloading ${url}"
    prep download --url "${url}" --out "${out_dir}/orig/${pair}.tgz" --untar "${out_dir}/orig" >/dev/null
  fi
fi
test_dir="${test_dir:-${data_dir}}"
_inputs=("${data_dir}/train.tags.${pair}.${src}" "${data_dir}/train.tags.${pair}.${tgt}")
IFS=, read -r -a _names <<< "${test_sets}"
for n in "${_names[@]}"; do _inputs+=("${test_dir}/${n}.${pair}.${src}.xml" "${test_dir}/${n}.${pair}.${tgt}.xml"); done
guard_outputs "${_inputs[@]}"
lock_out_dir
settings="data_dir=${data_dir} test_dir=${test_dir} vocab_size=${vocab_size} spm_model_type=${spm_model_type} test_sets=${test_sets} src=${src} tgt=${tgt} valid_every=${valid_every} min_len=${min_len} max_len=${max_len} ratio=${ratio}"
check_settings "${out_dir}" "${settings}"

raw="${out_dir}/raw"
raw_files_for "${raw}"

# ---- stage 1: extract train/valid from train.tags and test from the XML (into a temp folder) ----
if [[ ${stage} -le 1 && 1 -le ${stop_stage} ]]; then
  if stage1_current "${_inputs[@]}"; then
    log "stage 1: skip (extracted text exists in ${raw}, inputs unchanged)"
  else
    xml=()
    IFS=, read -r -a names <<< "${test_sets}"
    for name in "${names[@]}"; do
      xml+=("${test_dir}/${name}.${pair}.${src}.xml" "${test_dir}/${name}.${pair}.${tgt}.xml")
    done
    tmp="${out_dir}/.raw.tmp$$"
    trap 'rm -rf "${tmp}"' EXIT
    log "stage 1: test = ${test_sets} (XML); train/valid from train.tags (valid = every ${valid_every}th pair)"
    prep xml "${xml[@]}" --out-src "${tmp}/test.${src}" --out-tgt "${tmp}/test.${tgt}" >&2
    prep iwslt-train --src "${data_dir}/train.tags.${pair}.${src}" --tgt "${data_dir}/train.tags.${pair}.${tgt}" \
      --src-lang "${src}" --tgt-lang "${tgt}" --out-dir "${tmp}" --valid-every "${valid_every}" \
      --min-len "${min_len}" --max-len "${max_len}" --ratio "${ratio}" >&2
    commit_dir "${tmp}" "${raw}"
    trap - EXIT
    stage1_done "${_inputs[@]}"
  fi
  save_settings "${out_dir}" "${settings}"
fi

# ---- stages 2-4: joint sentencepiece, encode every split, binarize (data_prep/common.sh) ----
spm_encode_binarize
log "done: ${out_dir}"
