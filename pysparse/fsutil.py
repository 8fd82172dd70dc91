"""Writing files without ever leaving a half-written one behind."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(dst, data: bytes) -> None:
    """Writes `data` to a temporary file next to dst, then renames it over dst: dst is
    either untouched or complete."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
