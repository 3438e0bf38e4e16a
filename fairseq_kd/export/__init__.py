"""Shipping a student: fairseq checkpoints -> CTranslate2 model directories, decoded as fairseq would.

``spec`` maps a built fairseq Transformer (stock ``transformer`` and every ``transformer_glu``
configuration) onto CTranslate2's ``TransformerSpec``; ``convert`` writes the model directory
(vocabularies, sentencepiece model, metadata); ``decode`` runs it with fairseq's search rules
in mixed-length batches. Used by ``fairseq-kd-export``, ``fairseq-kd-translate`` and the
CTranslate2 backend of ``fairseq-kd-distill``.
"""
