"""Where files go and how they are written: the per-machine cache, replacing a file or folder in one rename, and
building a cache entry once when several processes want it at the same time.

Datasets, cached models, compiled programs, adapters and checkpoints all need these, so they live in a module
that imports none of ours and that any other module can import without pulling in the judge or the models.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path


def cache_dir() -> Path:
    """Per-machine cache (compiled programs, precompiled headers, the tiny models): $TINYLORA_CACHE or
    ~/.cache/tinylora_grpo_coder."""
    return Path(os.environ.get("TINYLORA_CACHE") or Path.home() / ".cache" / "tinylora_grpo_coder")


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary path beside `path` to write a file or a directory into. When the block ends, it replaces
    `path` by one rename, so a reader (or a crash) sees the old version or the whole new one, never half; when the
    block raises, it is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # rename does not replace a non-empty directory
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def built_once(path: Path, done: Callable[[], bool], build: Callable[[], object]) -> None:
    """Run `build` unless `done()` says the entry is complete, with at most one process building `path` at a time.

    Two jobs started together on a fresh machine (a sweep's cells, training beside an evaluation) both find a cache
    entry missing. Without a lock both build it, and the second one's `replaced_atomically` removes the first one's
    folder while that process is loading from it. With it, the second waits for the first and then finds it done.
    The lock is an flock on a file beside `path`, so it is released when its holder exits, crashed or not; each
    call opens the lock file anew, so two threads of one process wait for each other too.
    `done` is usually a marker file's `exists`; an entry made of several parts says when all of them are there.
    """
    if done():
        return
    lock_path = path.with_name(f".{path.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that is building {path}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not done():
            build()
