#!/usr/bin/env bash
# IWSLT14 German->English at the scale of the KD papers: fairseq's standard teacher
# (transformer_iwslt_de_en, 6+6 layers, d=512, FFN 1024, 4 heads; Adam 5e-4, inverse_sqrt
# 4000 warmup, dropout 0.3, weight decay 1e-4, label smoothing 0.1, 4096 tokens per GPU:
# the settings of fairseq's examples/translation/README.md), then ladder students trained
# with CE (none), word-level KD from the teacher's top-8 cache (word), on the teacher's
# beam-5 translations (seq) and with hybrid_kd on those translations, from the teacher's
# top-8 cache of them (hybrid, the study's). GPU and mixed precision by default.
#
#   bash scripts/recipes/iwslt14_deen.sh --data-dir DIR_WITH_train.tags --test-dir /work/shared/data/iwslt14
#   bash scripts/recipes/iwslt14_deen.sh ... --device cuda --bf16 --nprocs 4     # 4 GPUs
#   bash scripts/recipes/iwslt14_deen.sh ... --dry-run true     # prepare the data, print every GPU command
#
# Expected teacher BLEU: about 34.4 tokenized BLEU on the standard test set (Transformer
# baseline of Wu et al., 2019, "Pay Less Attention with Lightweight and Dynamic Convolutions",
# arXiv 1901.10430, Table 3: 34.4; fairseq's prepare-iwslt14.sh data, lowercased, Moses + BPE).
# This recipe keeps the text cased and uses sentencepiece and sacrebleu on detokenized output,
# so its figure is not directly comparable (cased detokenized BLEU is typically a few points
# lower). Not run here: no GPU was available when the recipe was written (dry runs only).
set -euo pipefail

# ---- options: each variable is also a --kebab-case flag (--help also lists the shared ones) ----
data_dir=""                  # folder with train.tags.de-en.{de,en} (empty: downloaded by the data script)
test_dir=""                  # folder with the IWSLT14.*.xml test sets (default: --data-dir)
work_dir=exp/iwslt14_deen    # everything goes here
vocab_size=10000             # joint sentencepiece vocabulary
teacher_arch=transformer_iwslt_de_en  # fairseq's standard IWSLT teacher
teacher_args="--optimizer adam --adam-betas (0.9,0.98) --clip-norm 0.0 --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 4000 --dropout 0.3 --weight-decay 0.0001 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 4096 --max-epoch 60"  # fairseq's IWSLT14 settings
students="transformer_relu_9m transformer_relu_20m transformer_glu_20m"  # capacity-ladder students
student_max_epoch=60         # student epochs
student_max_tokens=4096      # student tokens per batch per GPU
student_lr=5e-4              # student peak learning rate

recipe_name=iwslt14_deen
src=de
tgt=en
teacher_reference="fairseq examples/translation/README.md, IWSLT'14 German to English (Transformer)"
teacher_expected="~34.4 tokenized BLEU, Wu et al. 2019 (arXiv 1901.10430) Table 3, lowercased fairseq data"

prepare_data() {
  bash "${recipe_repo}/data_prep/prepare_iwslt14.sh" --out-dir "${data}" --vocab-size "${vocab_size}" \
    ${data_dir:+--data-dir "${data_dir}"} ${test_dir:+--test-dir "${test_dir}"}
}

# shellcheck source=scripts/recipes/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
recipe_main "$@"
