"""Load fairseq checkpoints under torch >= 2.6 (``weights_only=True``) without trusting pickles.

torch >= 2.6 refuses to unpickle anything but tensors and plain containers unless the
type is allowlisted. A fairseq checkpoint additionally stores an ``argparse.Namespace``
(legacy args / args-style model configs inside ``cfg``) and, in its training metrics,
NumPy scalars and (with ``--eval-bleu``) NumPy arrays. We allowlist exactly those types (``SAFE_GLOBALS``) with
``torch.serialization.add_safe_globals``, so fairseq's own loaders (train, resume,
generate, interactive) work unchanged, and every other global is still refused.

A checkpoint that holds anything else is refused with a message naming the file, the
offending types and the explicit opt-in: list the exact file in
``FAIRSEQ_KD_TRUSTED_CHECKPOINTS`` (``:``-separated paths) or pass ``--trust-checkpoint``
to a fairseq-kd tool. Only those files are then loaded with full unpickling.
"""
import argparse
import contextlib
import functools
import logging
import os
import pickle
from typing import Iterable, List, Optional, Set

import numpy as np
import torch

from fairseq_kd.errors import KDInputError

logger = logging.getLogger(__name__)

TRUST_ENV = "FAIRSEQ_KD_TRUSTED_CHECKPOINTS"


def _numpy_scalar_types() -> List:
    """NumPy pickles scalars as ``multiarray.scalar(dtype, bytes)``; dtypes by class."""
    try:  # numpy >= 1.25 names dtype classes in numpy.dtypes
        from numpy import dtypes as np_dtypes

        dtype_classes = [
            np_dtypes.Float64DType, np_dtypes.Float32DType, np_dtypes.Float16DType,
            np_dtypes.Int64DType, np_dtypes.Int32DType, np_dtypes.BoolDType,
        ]
    except ImportError:  # pragma: no cover - older numpy
        dtype_classes = []
    try:  # the name numpy pickles scalars under: numpy.core (1.x) / numpy._core (2.x)
        from numpy.core import multiarray
    except ImportError:  # pragma: no cover
        from numpy._core import multiarray
    # arrays: fairseq's --eval-bleu keeps NumPy count arrays in the saved metric state
    return [multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype, *dtype_classes]


#: Every non-tensor type a fairseq 0.12 checkpoint (model, optimizer, metrics) stores.
SAFE_GLOBALS = [argparse.Namespace, *_numpy_scalar_types()]

_trusted: Set[str] = set()
_installed = False


def _norm(path: str) -> str:
    return os.path.realpath(os.path.expanduser(str(path)))


def trust(paths: Iterable[str]) -> None:
    """Explicitly allow full unpickling of these exact files (trusted legacy checkpoints)."""
    _trusted.update(_norm(p) for p in paths if p)


def is_trusted(path: str) -> bool:
    env = [p for p in os.environ.get(TRUST_ENV, "").split(":") if p]
    return _norm(path) in _trusted or _norm(path) in {_norm(p) for p in env}


def unsafe_globals(path: str) -> List[str]:
    """Globals in ``path`` that the allowlist does not cover (for error messages)."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint, unreadable, ...
        return []
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
    return [g for g in found if g not in allowed]


def refusal_message(path: str, err: Exception) -> str:
    bad = unsafe_globals(path)
    what = ", ".join(bad) if bad else str(err).splitlines()[0]
    return (
        f"refusing to load checkpoint {path}: it stores {what}, which is not among the types "
        f"fairseq checkpoints hold (see fairseq_kd/checkpoint_safety.py SAFE_GLOBALS). If you "
        f"trust this file, allow it explicitly: pass --trust-checkpoint to a fairseq-kd tool, "
        f"or set {TRUST_ENV}={_norm(path)} for fairseq-train/fairseq-generate."
    )


@contextlib.contextmanager
def _full_unpickling():
    """Within the block, ``torch.load`` unpickles fully (only used for trusted files)."""
    original = torch.load
    torch.load = functools.partial(original, weights_only=False)
    try:
        yield
    finally:
        torch.load = original


def _guard(load_fn):
    """Wrap fairseq's ``load_checkpoint_to_cpu``: clear refusal, opt-in for trusted files."""

    @functools.wraps(load_fn)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        if not os.path.exists(path):
            raise KDInputError(f"checkpoint not found: {path} (check --path / --teacher-path / --restore-file)")
        if os.path.getsize(path) == 0:
            raise KDInputError(f"checkpoint {path} is empty (0 bytes): a crashed copy or save; copy it again "
                               f"or point to another checkpoint")
        with open(path, "rb") as f:
            head = f.read(4)
        if not (head.startswith(b"PK") or head[:1] == b"\x80"):  # zip (torch >= 1.6) or legacy pickle
            raise KDInputError(not_a_checkpoint(path, ValueError(f"it starts with {head!r}, not a zip or pickle")))
        try:
            if is_trusted(path):
                logger.warning("fully unpickling explicitly trusted checkpoint %s", path)
                with _full_unpickling():
                    return load_fn(path, *args, **kwargs)
            return load_fn(path, *args, **kwargs)
        except pickle.UnpicklingError as err:
            if unsafe_globals(path):
                raise KDInputError(refusal_message(path, err)) from None
            raise KDInputError(not_a_checkpoint(path, err)) from None
        except (EOFError, RuntimeError) as err:  # torch's zip reader on a truncated or foreign file
            if isinstance(err, RuntimeError) and not _is_read_error(err):
                raise
            raise KDInputError(not_a_checkpoint(path, err)) from None
        except OSError as err:  # torch's zip reader on a file cut inside its zip headers (EINVAL)
            raise KDInputError(not_a_checkpoint(path, err)) from None
        except (KeyError, AttributeError, TypeError) as err:  # unpickled, but not fairseq's layout
            raise KDInputError(f"{path} is a PyTorch file but not a fairseq checkpoint (no {err}): pass a "
                               f"checkpoint written by fairseq-train (checkpoint_best.pt / checkpoint_last.pt)") from None

    load_checkpoint_to_cpu.__fairseq_kd_guard__ = True
    return load_checkpoint_to_cpu


def _is_read_error(err: Exception) -> bool:
    text = str(err)
    return any(k in text for k in ("PytorchStreamReader", "zip archive", "central directory", "unexpected EOF",
                                   "invalid header", "magic number"))


def not_a_checkpoint(path: str, err: Exception) -> str:
    first = (str(err).splitlines() or [""])[0].split(". ")[0][:100] or type(err).__name__
    return (f"{path} is not a readable PyTorch checkpoint ({first}): it is truncated (an interrupted copy or "
            f"save) or another kind of file; copy it again, or point to another checkpoint")


def install() -> None:
    """Allowlist fairseq's checkpoint types and guard fairseq's loader (idempotent)."""
    global _installed
    if _installed:
        return
    torch.serialization.add_safe_globals(SAFE_GLOBALS)
    from fairseq import checkpoint_utils

    if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "__fairseq_kd_guard__", False):
        checkpoint_utils.load_checkpoint_to_cpu = _guard(checkpoint_utils.load_checkpoint_to_cpu)
    trust(os.environ.get(TRUST_ENV, "").split(":"))
    _installed = True


def load_checkpoint(path: str, trust_file: bool = False, arg_overrides: Optional[dict] = None):
    """fairseq's ``load_checkpoint_to_cpu`` with the allowlist; ``trust_file`` opts one file in."""
    install()
    if trust_file:
        trust([path])
    from fairseq import checkpoint_utils

    return checkpoint_utils.load_checkpoint_to_cpu(path, arg_overrides)
