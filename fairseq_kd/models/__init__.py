"""fairseq-kd models: every module here registers itself with fairseq on import."""
from fairseq_kd.registry import import_all

import_all(__name__, __file__)
