"""Sequence-level KD (Kim & Rush 2016): the teacher's own outputs become the student's targets.

``decoding`` turns a teacher into target token ids (beam, greedy, sampling, teacher
forcing), ``select`` picks among n-best hypotheses (seq-inter), ``shards`` writes a
distilled corpus resumably, ``ct2`` decodes a fairseq teacher with CTranslate2,
``ct2_teacher`` makes any CTranslate2 model (its own tokenizer) the teacher, ``filters``
cleans the published corpus, ``memo`` keeps the online targets of ``seq_kd``/``hybrid_kd`` on disk.
"""
