"""Data preparation: reading/cleaning parallel text, WIT3/XML/SGML extraction, sentencepiece.

Pure Python used by the bash pipelines in ``data_prep/`` and ``scripts/decode.sh`` through
``python -m fairseq_kd.prep <command>`` (see ``fairseq_kd/prep/__main__.py``).
"""
