#!/usr/bin/env bash
# Multi30k task 1 (de-en image captions): clean, joint sentencepiece, encode, binarize.
#
#   bash data_prep/prepare_multi30k.sh --data-dir /work/shared/data/multi30k --out-dir DIR [--vocab-size 8000]
#
# Output (the contract other scripts rely on):
#   DIR/raw/{train,valid,test}.{de,en}   cleaned raw text (train filtered; valid = val,
#                                        test = test_2016_flickr, never filtered), aligned with:
#   DIR/spm.model  DIR/spm/{train,valid,test}.{de,en}   joint sentencepiece model and pieces
#   DIR/bin/       fairseq-preprocess --joined-dictionary (dict.de.txt, train.de-en.de.bin ...)
# Extra test sets (--test-sets test_2016_flickr,test_2017_flickr) become test1, test2, ...
# Each stage is skipped when its outputs exist (stage 1: made from the inputs as they are now), so a
# second run is instant.
set -euo pipefail

# ---- options: each variable is also a --kebab-case flag ----
data_dir=""                 # folder with train/val/<test>.{de,en}; empty: download into DIR/orig
out_dir=""                  # output folder (required)
vocab_size=8000             # joint sentencepiece vocabulary size
spm_model_type=unigram      # unigram | bpe
test_sets=test_2016_flickr  # comma list: first is "test", the next "test1", "test2", ...
src=de                      # source language suffix
tgt=en                      # target language suffix
min_len=1                   # cleaning (train only): min words per side
max_len=250                 # cleaning (train only): max words per side
ratio=2.0                   # cleaning (train only): max length ratio between sides
workers=2                   # fairseq-preprocess workers
stage=0                     # first stage to run
stop_stage=100              # last stage to run
url_base=https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw  # official repo

# shellcheck source=data_prep/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "$@"
[[ -n "${out_dir}" ]] || usage_error "--out-dir is required"
[[ "${vocab_size}" =~ ^[0-9]+$ ]] || usage_error "--vocab-size must be a positive integer"
python="$(pick_python)"

IFS=, read -r -a tests <<< "${test_sets}"
splits=(train valid)          # output split names
origs=(train val)             # Multi30k file names
for i in "${!tests[@]}"; do
  if [[ ${i} -eq 0 ]]; then splits+=(test); else splits+=("test${i}"); fi
  origs+=("${tests[${i}]}")
done

# ---- stage 0: inputs (download when no --data-dir into DIR/orig) ----
if [[ -z "${data_dir}" ]]; then
  data_dir="${out_dir}/orig"
  if [[ ${stage} -le 0 && 0 -le ${stop_stage} ]]; then
    for name in "${origs[@]}"; do
      for l in "${src}" "${tgt}"; do
        [[ -f "${data_dir}/${name}.${l}" ]] && continue
        log "stage 0: downloading ${url_base}/${name}.${l}.gz"
        prep download --url "${url_base}/${name}.${l}.gz" --out "${data_dir}/${name}.${l}" --gunzip >/dev/null
      done
    done
  fi
fi
_inputs=(); for n in "${origs[@]}"; do _inputs+=("${data_dir}/${n}.${src}" "${data_dir}/${n}.${tgt}"); done
guard_outputs "${_inputs[@]}"
lock_out_dir
settings="data_dir=${data_dir} vocab_size=${vocab_size} spm_model_type=${spm_model_type} test_sets=${test_sets} src=${src} tgt=${tgt} min_len=${min_len} max_len=${max_len} ratio=${ratio}"
check_settings "${out_dir}" "${settings}"

raw="${out_dir}/raw"
raw_files_for "${raw}"

# ---- stage 1: clean (train filtered by length/ratio; valid/test only whitespace-normalized) ----
if [[ ${stage} -le 1 && 1 -le ${stop_stage} ]]; then
  if stage1_current "${_inputs[@]}"; then
    log "stage 1: skip (cleaned text exists in ${raw}, inputs unchanged)"
  else
    log "stage 1: cleaning into ${raw}"
    eval_pairs=()
    for i in "${!splits[@]}"; do
      [[ "${splits[${i}]}" == train ]] && continue
      eval_pairs+=(--eval-pair "${data_dir}/${origs[${i}]}.${src}" "${data_dir}/${origs[${i}]}.${tgt}" \
                               "${raw}/${splits[${i}]}.${src}" "${raw}/${splits[${i}]}.${tgt}")
    done
    # checks that every pair is aligned before it writes anything
    prep clean --min-len "${min_len}" --max-len "${max_len}" --ratio "${ratio}" "${eval_pairs[@]}" \
      --pair "${data_dir}/train.${src}" "${data_dir}/train.${tgt}" "${raw}/train.${src}" "${raw}/train.${tgt}" >&2
    stage1_done "${_inputs[@]}"
  fi
  save_settings "${out_dir}" "${settings}"
fi

# ---- stages 2-4: joint sentencepiece, encode every split, binarize (data_prep/common.sh) ----
spm_encode_binarize
log "done: ${out_dir}"
