import sys

from fairseq_kd.losses import divergences as _m

sys.modules[__name__] = _m
