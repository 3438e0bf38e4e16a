#!/usr/bin/env bash
# Decode with fairseq-generate (beam or greedy) and write one detokenized hypothesis per input
# line: hypotheses are put back in input order and sentencepiece is removed.
#
#   bash scripts/decode.sh --data-bin DIR/bin --checkpoint CKPT --out hyp.en [--subset test]
#        [--decoding beam|greedy] [--beam 5] [--spm-model DIR/spm.model] [-- extra fairseq-generate args]
#   bash scripts/decode.sh --data-bin DIR/bin --checkpoint CKPT --input raw.de --out hyp.en
#        (--input: decode any raw source file: encoded with --spm-model, binarized with the
#         dictionaries of --data-bin)
# Also writes OUT.pieces (ordered pieces) and OUT.log (fairseq-generate output).
set -euo pipefail

# ---- options: each variable is also a --kebab-case flag ----
data_bin=""          # fairseq data-bin with dict.SRC.txt / dict.TGT.txt (required)
checkpoint=""        # model checkpoint(s), colon-separated for an ensemble (required)
out=""               # output hypothesis file, aligned to the input (required)
subset=test          # binarized split of --data-bin to decode (ignored with --input)
input=""             # raw source text to decode instead of a binarized split
decoding=beam        # beam | greedy (greedy = beam 1)
beam=5               # beam size for --decoding beam
lenpen=1.0           # length penalty
max_len_a=1.2        # max output length = a * source length + b
max_len_b=10         # see max_len_a
max_tokens=4000      # batch size in tokens
spm_model=""         # sentencepiece model; default DATA_BIN/../spm.model when present; "none": keep pieces
src=de               # source language
tgt=en               # target language
task=kd_translation  # fairseq task used for decoding (kd_translation: every sentence stops at its own a*len+b; translation: at the padded batch's)
seed=1               # fairseq seed
allow_renamed_dicts=false  # true: decode although --data-bin's dictionaries hold other symbols than the checkpoint's (renamed id for id)

# shellcheck source=data_prep/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../data_prep/common.sh"
extra=()
for ((i = 1; i <= $#; i++)); do
  if [[ "${!i}" == "--" ]]; then extra=("${@:i+1}"); set -- "${@:1:i-1}"; break; fi
done
parse_flags "$@"
[[ -n "${data_bin}" && -n "${checkpoint}" && -n "${out}" ]] || usage_error "--data-bin, --checkpoint and --out are required"
case "${decoding}" in
  beam) ;;
  greedy) beam=1 ;;
  *) usage_error "--decoding must be beam or greedy, not '${decoding}'" ;;
esac
[[ "${beam}" =~ ^[1-9][0-9]*$ ]] || usage_error "--beam must be a positive integer"
[[ "${allow_renamed_dicts}" == true || "${allow_renamed_dicts}" == false ]] \
  || usage_error "--allow-renamed-dicts must be true or false, not '${allow_renamed_dicts}'"
for f in "${data_bin}/dict.${src}.txt" "${data_bin}/dict.${tgt}.txt"; do
  [[ -f "${f}" ]] || die "${f} not found: --data-bin must be a fairseq-preprocess output for ${src}-${tgt}"
done
IFS=: read -r -a ckpts <<< "${checkpoint}"
for c in "${ckpts[@]}"; do [[ -f "${c}" ]] || die "checkpoint ${c} not found"; done
if [[ -z "${spm_model}" && -f "${data_bin}/../spm.model" ]]; then spm_model="${data_bin}/../spm.model"; fi
python="$(pick_python)"
# refuse (exit 2) an --out that is, contains or lies inside an input, under any spelling
guard_args=(--input "${data_bin}" --input "${input}")
for c in "${ckpts[@]}"; do guard_args+=(--input "${c}"); done
[[ "${spm_model}" == none ]] || guard_args+=(--input "${spm_model}")
prep guard --tool decode.sh "${guard_args[@]}" --output "${out}" --output "${out}.pieces" --output "${out}.log"
# refuse (exit 2) a checkpoint trained with other dictionaries (other symbols, or the same in another order)
# or the other direction; --allow-renamed-dicts true: other symbols of the same size are only warned about
dict_args=(); for c in "${ckpts[@]}"; do dict_args+=(--checkpoint "${c}"); done
if [[ "${allow_renamed_dicts}" == true ]]; then dict_args+=(--allow-renamed); fi
prep dicts "${dict_args[@]}" --data-bin "${data_bin}" --src "${src}" --tgt "${tgt}" >/dev/null

work="$(mktemp -d "${TMPDIR:-/tmp}/decode.XXXXXX")"
trap 'rm -rf "${work}"' EXIT

gen_bin="${data_bin}"
if [[ -n "${input}" ]]; then
  [[ -f "${input}" ]] || die "--input ${input} not found"
  [[ -n "${spm_model}" && "${spm_model}" != none ]] || die "--input needs --spm-model to encode the raw text"
  log "encoding ${input} with ${spm_model}"
  prep spm-encode --model "${spm_model}" --pair "${input}" "${work}/input.${src}" >/dev/null
  "${python}" -m fairseq_cli.preprocess --only-source --source-lang "${src}" --target-lang "${tgt}" \
    --srcdict "${data_bin}/dict.${src}.txt" --testpref "${work}/input" --destdir "${work}/bin" \
    --workers 1 > "${work}/preprocess.log" 2>&1 || { cat "${work}/preprocess.log" >&2; die "binarizing ${input} failed"; }
  cp "${data_bin}/dict.${tgt}.txt" "${work}/bin/"
  gen_bin="${work}/bin"
  subset=test
fi
# fairseq-preprocess names a split for the pair it was run on: SUBSET.SRC-TGT.* or, binarized for the
# other direction, SUBSET.TGT-SRC.* (fairseq's translation task reads either, in this order)
pair="${src}-${tgt}"
[[ -f "${gen_bin}/${subset}.${pair}.${src}.idx" ]] || pair="${tgt}-${src}"
[[ -f "${gen_bin}/${subset}.${pair}.${src}.idx" ]] \
  || die "${gen_bin}/${subset}.${src}-${tgt}.${src}.idx not found (nor ${subset}.${tgt}-${src}.${src}.idx): no binarized '${subset}' split for ${src}-${tgt}"

# --required-batch-size-multiple 1: fairseq 0.12's batch_by_size drops the last batch when its
# size is not a multiple of this (default 8), i.e. silently skips up to 7 sentences
# (facebookresearch/fairseq#5036); the hyps step below refuses any missing id.
log "fairseq-generate ${subset} (${decoding}, beam ${beam}) with ${checkpoint}"
"${python}" -m fairseq_cli.generate "${gen_bin}" --user-dir "${_prep_repo}/fairseq_kd" --task "${task}" \
  --path "${checkpoint}" --gen-subset "${subset}" --source-lang "${src}" --target-lang "${tgt}" \
  --beam "${beam}" --nbest 1 --lenpen "${lenpen}" --max-len-a "${max_len_a}" --max-len-b "${max_len_b}" \
  --max-tokens "${max_tokens}" --required-batch-size-multiple 1 --seed "${seed}" --num-workers 0 "${extra[@]}" \
  > "${work}/gen.out" 2> "${work}/gen.err" || { tail -n 30 "${work}/gen.err" >&2; die "fairseq-generate failed"; }

spm_args=()
if [[ "${spm_model}" == none ]]; then spm_args=(--no-spm)
elif [[ -n "${spm_model}" ]]; then spm_args=(--spm-model "${spm_model}"); fi
prep hyps --gen "${work}/gen.out" --bin-prefix "${gen_bin}/${subset}.${pair}.${src}" \
  "${spm_args[@]}" --out "${out}" --out-pieces "${out}.pieces" >/dev/null
cat "${work}/gen.err" "${work}/gen.out" > "${out}.log"
# fairseq's own BLEU4 (pieces against the reference rebuilt from the binarized data) is left in OUT.log: it is
# not the score (fairseq-kd-score scores OUT against the raw reference), so it is not printed here
log "wrote ${out} ($(wc -l < "${out}") lines; score it with fairseq-kd-score -i ${out} -r REFERENCE)"
