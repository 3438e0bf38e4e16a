"""IWSLT (WIT3) formats: ``train.tags`` text with XML meta lines, and ``<seg id=..>`` XML test sets.

The standard split follows fairseq's ``prepare-iwslt14.sh``: drop the ``<url>``, ``<talkid>``,
``<keywords>`` ... meta lines, keep the text of ``<title>``/``<description>`` (the recipe does),
clean, then valid = every 23rd cleaned training pair (line numbers 23, 46, ...), train = the
rest; test = dev2010 + TEDX dev2012 + tst2010 + tst2011 + tst2012 (887+1165+1565+1433+1700).
"""
import html
import re
from pathlib import Path
from typing import List, Sequence, Tuple

from fairseq_kd.errors import KDInputError
from fairseq_kd.prep.textio import read_lines

# Test sets of the common recipe, in its concatenation order.
IWSLT14_TEST_SETS = ("IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010",
                     "IWSLT14.TED.tst2011", "IWSLT14.TED.tst2012")
VALID_EVERY = 23

_KEEP_TEXT_TAGS = re.compile(r"</?(title|description)>")
_SEG = re.compile(r"<seg\s+id\s*=\s*\"?\s*(\d+)\s*\"?\s*>(.*?)</seg>", re.IGNORECASE)


def strip_train_tags(lines: Sequence[str]) -> List[str]:
    """Remove WIT3 meta lines (any line starting with ``<``) but keep title/description text."""
    out = []
    for line in lines:
        s = line.strip()
        if s.startswith("<title>") or s.startswith("<description>"):
            out.append(_KEEP_TEXT_TAGS.sub("", s).strip())
        elif not s.startswith("<"):
            out.append(line)
    return out


def read_train_tags(path) -> List[str]:
    """Sentences of one side of ``train.tags.<pair>.<lang>``."""
    return strip_train_tags(read_lines(path))


def extract_xml_segs(text: str, path="<xml>") -> List[Tuple[int, str]]:
    """``(id, sentence)`` of every ``<seg id="N"> ... </seg>`` in document order, entities unescaped."""
    segs = [(int(m.group(1)), html.unescape(m.group(2)).strip()) for m in _SEG.finditer(text)]
    n_open = len(re.findall(r"<seg[\s>]", text, re.IGNORECASE))
    if n_open != len(segs):
        raise KDInputError(f"{path}: {n_open} <seg> tags but only {len(segs)} well-formed "
                           f"'<seg id=\"N\"> ... </seg>' segments; the file looks truncated or corrupt")
    return segs


def read_xml_pair(src_xml, tgt_xml) -> Tuple[List[str], List[str]]:
    """Aligned sentences of a source/target XML pair; refuses different seg counts or ids."""
    sides = []
    for path in (src_xml, tgt_xml):
        if not Path(path).is_file():
            raise KDInputError(f"{path}: IWSLT XML file not found; check --data-dir")
        sides.append(extract_xml_segs("\n".join(read_lines(path)), path))
    (s_segs, t_segs) = sides
    if len(s_segs) != len(t_segs):
        raise KDInputError(f"misaligned XML test set: {src_xml} has {len(s_segs)} segments but "
                           f"{tgt_xml} has {len(t_segs)}; use the matching pair from the same release")
    for (i, _), (j, _) in zip(s_segs, t_segs):
        if i != j:
            raise KDInputError(f"misaligned XML test set: segment id {i} in {src_xml} faces id {j} "
                               f"in {tgt_xml}; use the matching pair from the same release")
    return [s for _, s in s_segs], [t for _, t in t_segs]


def valid_split_mask(n: int, every: int = VALID_EVERY) -> List[bool]:
    """True for lines going to valid: 1-based line numbers divisible by ``every``."""
    return [(i + 1) % every == 0 for i in range(n)]
