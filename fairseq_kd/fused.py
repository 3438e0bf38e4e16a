import sys

from fairseq_kd.losses import fused as _m

sys.modules[__name__] = _m
