"""The KD methods a study's grid knows: what each trains with (``METHOD_SPECS``), and what it reads.

A method is a name of ``METHOD_SPECS`` or a variant ``BASE.LABEL`` of one (``word.rkl``: word's
criterion and teacher with its own ``--method-args`` flags).
"""
from typing import Dict

# What each method trains with. ``data``: "corpus" or "distilled" (offline seq-KD data,
# fairseq-kd-distill's translations of train); ``teacher``: pass --teacher-path; ``decoding``:
# the method varies over decodings (of the distilled data, or the task's --seq-kd-decoding
# when online); ``flags``: the method's own fixed flags. Every criterion takes --label-smoothing.
METHOD_SPECS = {
    "none": {"criterion": "label_smoothed_cross_entropy", "data": "corpus", "teacher": False, "decoding": False},
    "word": {"criterion": "word_kd", "data": "corpus", "teacher": True, "decoding": False},
    "seq": {"criterion": "label_smoothed_cross_entropy", "data": "distilled", "teacher": False, "decoding": True},
    "seq_online": {"criterion": "seq_kd", "data": "corpus", "teacher": True, "decoding": True},
    # word-level KL + CE on the distilled data (fixed gate --hybrid-weight, default 0.5)
    "hybrid": {"criterion": "hybrid_kd", "data": "distilled", "teacher": True, "decoding": True,
               "flags": ["--seq-kd-targets", "data"]},
    "hybrid_online": {"criterion": "hybrid_kd", "data": "corpus", "teacher": True, "decoding": True},
    # on-policy KD (ImitKD / GKD): divergence on the student's own outputs with prob. --onpolicy-lambda
    "onpolicy": {"criterion": "onpolicy_kd", "data": "corpus", "teacher": True, "decoding": False},
    # under noise, the teacher reads the student's noisy source ("tnoisy") instead of the clean one:
    # word-level online; sequence-level offline, on the distilled noisy copies (``study.inputs``), the
    # student reading exactly the noisy source the teacher translated (no further noise)
    "word_tnoisy": {"criterion": "word_kd", "data": "corpus", "teacher": True, "decoding": False,
                    "flags": ["--noise-teacher-input", "noisy"], "teacher_input": "noisy"},
    "seq_tnoisy": {"criterion": "label_smoothed_cross_entropy", "data": "distilled", "teacher": False,
                   "decoding": True, "teacher_input": "noisy"},
}


def method_base(method: str) -> str:
    """The method a grid name trains with: ``word.rkl`` is a variant of ``word`` (own label, own flags)."""
    return method.split(".", 1)[0]


def method_spec(method: str) -> Dict:
    """METHOD_SPECS of ``method`` or of the method it is a variant of (``BASE.LABEL``)."""
    return METHOD_SPECS[method_base(method)]


def teacher_reads_noise(method: str) -> bool:
    """The method's teacher reads the student's noisy source (at noise 0 it is its clean-teacher method)."""
    return method_spec(method).get("teacher_input") == "noisy"


def reads_noisy_copies(method: str) -> bool:
    """The method trains on the teacher's translations of fixed noisy copies of the source."""
    return teacher_reads_noise(method) and method_spec(method)["data"] == "distilled"


def uses_teacher(method: str) -> bool:
    spec = method_spec(method)
    return spec["teacher"] or spec["data"] == "distilled"
