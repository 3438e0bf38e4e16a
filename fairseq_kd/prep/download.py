"""Fetch a public corpus file (optionally gunzip/untar) atomically, with a clear offline error."""
import gzip
import shutil
import tarfile
import urllib.request
from pathlib import Path

from fairseq_kd import fileio
from fairseq_kd.errors import KDInputError


def fetch(url: str, out, gunzip: bool = False, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``out`` (gunzipped when asked) via a temp file; skip when present."""
    out = Path(out)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, fileio.atomic_open(out, "wb") as f:
            shutil.copyfileobj(gzip.GzipFile(fileobj=resp) if gunzip else resp, f, 1 << 20)
    except OSError as e:  # URLError, timeouts, DNS failures, bad gzip are all OSErrors
        raise KDInputError(f"could not download {url} ({e}); this machine may be offline: "
                           f"download it elsewhere and pass the local folder with --data-dir") from None
    return out


def untar(archive, dest) -> Path:
    """Extract a (gzipped) tar archive into ``dest`` (safe paths only)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest
