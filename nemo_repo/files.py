"""Atomic writes: a reader (another rank, a resumed run, a later recipe) sees a file or folder
whole or not at all, never half written."""

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path):
    """Yield `<path>.tmp` to write; it becomes `path` when the block ends, and is removed when the
    block raises (no partial output is left behind)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


@contextmanager
def new_directory(final, replace: bool = False):
    """Yield a fresh temporary folder next to `final` to fill; it becomes `final` in one rename
    when the block ends, and is removed when the block raises. `replace`: a `final` already there
    is removed first; otherwise a `final` that another process published first (ranks race to
    fill a cache) wins and ours is dropped."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        if replace and final.exists():
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)
        except OSError:
            if replace or not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
