#!/usr/bin/env bash
# WMT14 English->German at the scale of the KD papers (Kim & Rush 2016 distil this task):
# fairseq's standard big teacher (transformer_vaswani_wmt_en_de_big, 6+6 layers, d=1024,
# FFN 4096, 16 heads; Adam 5e-4, inverse_sqrt 4000 warmup from 1e-7, dropout 0.3, label
# smoothing 0.1, 3584 tokens per GPU: the settings of fairseq's examples/scaling_nmt/README.md,
# Ott et al. 2018), then ladder students with CE / word / seq / hybrid KD, on GPU with mixed
# precision. Data: data_prep/prepare_wmt14.sh (newstest2013 valid, newstest2014 test).
#
#   bash scripts/recipes/wmt14_ende.sh --train-corpora P1,P2 --test-dir DIR --valid-dir DIR --nprocs 8
#   bash scripts/recipes/wmt14_ende.sh ... --dry-run true     # prepare the data, print every GPU command
#
# Expected teacher BLEU on newstest2014: 28.4 (Vaswani et al. 2017, "Attention Is All You Need",
# arXiv 1706.03762, Table 2, big model); 29.3 compound-split tokenized BLEU / 28.6 sacrebleu
# (Ott et al. 2018, "Scaling Neural Machine Translation", arXiv 1806.00187; fairseq's
# examples/scaling_nmt/README.md: 29.29 and 28.6 with 128-GPU-equivalent batches,
# --update-freq 16 on 8 GPUs and lr 0.001). Those use Moses + 32k BPE; this recipe uses a
# 32k joint sentencepiece and scores detokenized output with sacrebleu. Not run here: no GPU
# was available when the recipe was written (dry runs only).
set -euo pipefail

# ---- options: each variable is also a --kebab-case flag (--help also lists the shared ones) ----
train_corpora=""             # comma list of parallel corpus prefixes P (P.en, P.de); empty: download
test_dir=""                  # folder with newstest2014-deen-{src.en,ref.de}.sgm (empty: downloaded)
valid_dir=""                 # folder with newstest2013 (empty: downloaded; offline: carved from train)
work_dir=exp/wmt14_ende      # everything goes here
vocab_size=32000             # joint sentencepiece vocabulary
teacher_arch=transformer_vaswani_wmt_en_de_big  # fairseq's standard WMT14 en-de teacher
teacher_args="--optimizer adam --adam-betas (0.9,0.98) --clip-norm 0.0 --lr 0.0005 --lr-scheduler inverse_sqrt --warmup-updates 4000 --warmup-init-lr 1e-07 --dropout 0.3 --weight-decay 0.0 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 3584 --max-update 300000"  # Ott et al. 2018 settings
students="transformer_relu_44m transformer_glu_44m transformer_relu_95m"  # capacity-ladder students
student_max_epoch=30         # student epochs
student_max_tokens=4096      # student tokens per batch per GPU
student_lr=7e-4              # student peak learning rate

recipe_name=wmt14_ende
src=en
tgt=de
teacher_reference="fairseq examples/scaling_nmt/README.md (Ott et al. 2018)"
teacher_expected="28.4 BLEU (Vaswani et al. 2017, Table 2); 29.3 tokenized / 28.6 sacrebleu (Ott et al. 2018)"

prepare_data() {
  bash "${recipe_repo}/data_prep/prepare_wmt14.sh" --out-dir "${data}" --vocab-size "${vocab_size}" \
    --src "${src}" --tgt "${tgt}" ${train_corpora:+--train-corpora "${train_corpora}"} \
    ${test_dir:+--test-dir "${test_dir}"} ${valid_dir:+--valid-dir "${valid_dir}"}
}

# shellcheck source=scripts/recipes/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
recipe_main "$@"
