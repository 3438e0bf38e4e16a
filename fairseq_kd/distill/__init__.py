"""Sequence-level KD (Kim & Rush 2016): the teacher's own outputs become the student's targets.

``decoding`` turns a teacher into target token ids (beam, greedy, sampling, teacher
forcing), ``select`` picks among n-best hypotheses (seq-inter), ``shards`` writes a
distilled corpus resumably, ``ct2`` decodes with CTranslate2, ``memo`` keeps the online
targets of ``seq_kd``/``hybrid_kd`` on disk.
"""
