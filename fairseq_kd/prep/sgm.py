"""WMT SGML test sets (``newstest*.sgm``): ``<seg id=N>`` text per document, aligned src/ref.

Text is taken as published (like sacrebleu, no entity unescaping: WMT SGML holds raw ``&``).
Source and reference are paired by (document id, segment id) and refused when they differ.
"""
import re
from pathlib import Path
from typing import List, Tuple

from fairseq_kd.errors import KDInputError
from fairseq_kd.prep.textio import normalize, read_lines

_DOC = re.compile(r"<doc\s[^>]*docid\s*=\s*\"([^\"]*)\"", re.IGNORECASE)
_SEG = re.compile(r"<seg\s[^>]*?id\s*=\s*\"?([^\">\s]+)\"?[^>]*>(.*)</seg>", re.IGNORECASE)


def extract_sgm(lines, path="<sgm>") -> List[Tuple[Tuple[str, str], str]]:
    """``((docid, segid), text)`` for every segment, in file order."""
    out, doc = [], ""
    for n, line in enumerate(lines, 1):
        m = _DOC.search(line)
        if m:
            doc = m.group(1)
        if re.search(r"<seg[\s>]", line, re.IGNORECASE):
            s = _SEG.search(line)
            if not s:
                raise KDInputError(f"{path}:{n}: malformed <seg> line (expected '<seg id=\"N\">text</seg>' "
                                   f"on one line); is this a WMT SGML file?")
            out.append(((doc, s.group(1)), normalize(s.group(2))))
    return out


def read_sgm_pair(src_sgm, ref_sgm) -> Tuple[List[str], List[str]]:
    """Aligned source and reference sentences of an SGML test set."""
    sides = []
    for path in (src_sgm, ref_sgm):
        if not Path(path).is_file():
            raise KDInputError(f"{path}: SGML test file not found; check the test-set directory")
        sides.append(extract_sgm(read_lines(path), path))
    s, r = sides
    if len(s) != len(r):
        raise KDInputError(f"misaligned SGML test set: {src_sgm} has {len(s)} segments but {ref_sgm} "
                           f"has {len(r)}; use the src/ref pair of the same test set")
    for (ks, _), (kr, _) in zip(s, r):
        if ks != kr:
            raise KDInputError(f"misaligned SGML test set: segment {ks} of {src_sgm} faces {kr} of "
                               f"{ref_sgm}; use the src/ref pair of the same test set")
    return [t for _, t in s], [t for _, t in r]
