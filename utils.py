"""The judge: extract, compile, run and score model-written C++ programs.

This module is the only code that executes generated programs (see docs/judge.md for the threat model).
Pipeline: completion -> extract_code -> compile (cached, precompiled <bits/stdc++.h>) -> one sandboxed
process per test (compiler and program see a minimal root: no user files) -> Verdict per test (CPU-time
limits; the problem's compare rule or checker) -> JudgeResult -> reward_from_result. problem_judge_config
gives each problem its own JudgeConfig; judge_batch runs many programs on a thread pool; CodeReward wraps it
in TRL's reward-function signature.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import enum
import functools
import hashlib
import itertools
import json
import logging
import math
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from paths import built_once, cache_dir

logger = logging.getLogger(__name__)


class Verdict(str, enum.Enum):
    OK = "OK"            # ran, output matched
    WA = "WA"            # ran, output differed
    TLE = "TLE"          # charged CPU time over the limit, or asleep too long (see _failure)
    MLE = "MLE"          # failed by itself after exhausting its address space (heuristic, see _failure)
    RE = "RE"            # nonzero exit or killed by a signal
    OLE = "OLE"          # wrote more than output_limit_bytes
    CE = "CE"            # did not compile
    NO_CODE = "NO_CODE"  # the completion contained no program


COMPARE_RULES = ("tokens", "tokens_nocase", "exact", "float", "float:<eps>")


def _compare_rule(how: str) -> tuple[str, float]:
    """(mode, epsilon) of a compare rule; ValueError for anything else than COMPARE_RULES."""
    if how in ("tokens", "tokens_nocase", "exact"):
        return how, 0.0
    if how == "float":
        return "float", 1e-6
    if how.startswith("float:"):
        try:
            eps = float(how[len("float:"):])
        except ValueError:
            eps = math.nan
        if 0 < eps < math.inf:
            return "float", eps
    raise ValueError(f"unknown compare rule {how!r}: use one of {', '.join(COMPARE_RULES)}")


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """Every limit the judge enforces, with the seed's values as defaults (g++ -O2 -std=c++17, 2 s).
    A problem's own limits, compare rule and checker come from problem_judge_config."""
    time_limit_s: float = 2.0        # charged CPU seconds per test, all threads (wall clock: sleepers only, 2x + 1 s)
    memory_mb: int = 1024
    output_limit_bytes: int = 32 << 20
    compile_timeout_s: float = 10.0
    compile_memory_mb: int = 2048
    cxx: str = "g++"
    cxx_flags: tuple[str, ...] = ("-O2", "-std=c++17")
    compare: str = "tokens"          # one of COMPARE_RULES: tokens | tokens_nocase | exact | float | float:<eps>
    checker: str | None = None       # C++ source of a testlib-style checker; replaces `compare` when set
    checker_time_limit_s: float = 5.0
    max_tests: int = 10
    test_selection: str = "first"    # "first" | "longest"
    binary: bool = False             # stop at the first failing test (DeepCoder-style all-or-nothing)
    workers: int | None = None       # None = os.cpu_count()
    max_processes: int = 8           # RLIMIT_NPROC for the program's private uid (stops fork bombs)
    file_size_mb: int = 16           # RLIMIT_FSIZE: largest file the program may write in its work dir

    def __post_init__(self) -> None:
        _compare_rule(self.compare)  # a typo in a record or flag fails here, not as all-WA later


# The fields of a problem record that decide how it is judged (problem_judge_config reads them).
PROBLEM_JUDGE_FIELDS = ("time_limit_s", "memory_limit_mb", "compare", "checker")


def problem_judge_config(problem: dict, base: JudgeConfig, *, max_time_limit_s: float | None = None,
                         max_memory_mb: int | None = None) -> JudgeConfig:
    """The JudgeConfig for one problem record: its `time_limit_s`, `memory_limit_mb`, `compare` and
    `checker` where present (None or absent: the base's), the time and memory capped by the explicit run
    flags max_time_limit_s / max_memory_mb when given. Everything else comes from `base`."""
    time_limit = problem.get("time_limit_s") or base.time_limit_s
    memory = problem.get("memory_limit_mb") or base.memory_mb
    return dataclasses.replace(
        base, time_limit_s=min(time_limit, max_time_limit_s or math.inf),
        memory_mb=min(memory, max_memory_mb or memory), compare=problem.get("compare") or base.compare,
        checker=problem.get("checker") or base.checker)


@dataclasses.dataclass
class JudgeResult:
    compiled: bool
    verdicts: list[Verdict]
    passed: int
    total: int
    verdict: Verdict
    compile_s: float = 0.0
    run_s: float = 0.0
    message: str = ""


# ---------------------------------------------------------------------------------------------------------
# Code extraction
# ---------------------------------------------------------------------------------------------------------

_CPP_LANGS = {"cpp", "c++", "cc", "cxx", "c", ""}
_FENCE = re.compile(r"^[ \t]*```[ \t]*([^`]*?)[ \t]*$")   # a line opening or closing a fenced block
_GLUED_CLOSE = re.compile(r"^(.*\S)[ \t]*```[ \t]*$")      # "return 0; }```": code glued to the closing fence
_MAIN = re.compile(r"\bmain\s*\(")
_FREOPEN = re.compile(r"\bfreopen\s*\([^;]*?,\s*(stdin|stdout|stderr)\s*\)")


def _opening_fence(info: str) -> tuple[str, str | None]:
    """(language, code glued to the fence) of an opening fence's info string. Small models glue the first
    line to the fence ("```#include <iostream>", "```cpp #include <bits/stdc++.h>"); a preprocessor line
    is code, never a language tag."""
    if info.startswith("#"):
        return "", info
    lang, _, rest = info.partition(" ")
    rest = rest.strip()
    return lang.lower(), rest if rest.startswith("#") else None


def extract_code(completion: str) -> str | None:
    """The C++ program in a model completion, or None.

    Fenced blocks tagged cpp/c++/cc/cxx/c or bare count (also when code is glued to the opening or the
    closing fence, or unfenced code from #include to a closing fence); the last complete block that defines main wins (models often show a sketch first and
    the final program last), then the last complete block. A truncated completion (an opened fence never
    closed) is judged as written, from the fence to the end: it usually fails to compile, which keeps "ran
    out of tokens" visible as CE instead of hiding it as NO_CODE. Without usable fences, code starts at the
    first #include and stops at the next fence. <think> sections are ignored. freopen(..., stdin/stdout)
    calls become the stream itself: problems use stdin/stdout.
    """
    text = re.sub(r"<think>.*?</think>", "", completion, flags=re.DOTALL)
    text = text.split("<think>")[0]  # an unclosed <think> is reasoning cut off by the length limit
    complete, open_block, loose = [], None, []
    for line in text.splitlines():
        fence = _FENCE.match(line)
        if open_block is None:
            start = next((i for i, s in enumerate(loose) if "#include" in s), None)
            if fence and not fence.group(1) and start is not None:  # code whose opening fence was forgotten
                complete.append(("", [loose[start][loose[start].index("#include"):], *loose[start + 1:]]))
            elif fence:
                lang, glued = _opening_fence(fence.group(1))
                open_block = (lang, [glued] if glued else [])
            loose = [] if fence else loose + [line]
        elif fence and not fence.group(1):
            complete.append(open_block)
            open_block = None
        elif glued_close := _GLUED_CLOSE.match(line):
            open_block[1].append(glued_close.group(1))
            complete.append(open_block)
            open_block = None
        else:
            open_block[1].append(line)
    blocks = [("\n".join(body)).strip() for lang, body in complete if lang in _CPP_LANGS]
    blocks = [b for b in blocks if b]
    with_main = [b for b in blocks if _MAIN.search(b)]
    if with_main:
        code = with_main[-1]
    elif open_block is not None and open_block[0] in _CPP_LANGS and "\n".join(open_block[1]).strip():
        code = "\n".join(open_block[1]).strip()
    elif blocks:
        code = blocks[-1]
    elif "#include" in text:
        code = text[text.index("#include"):].split("```", 1)[0].strip()
    else:
        return None
    return _FREOPEN.sub(r"\1", code)


# ---------------------------------------------------------------------------------------------------------
# Sandbox: the one function that starts untrusted processes
# ---------------------------------------------------------------------------------------------------------

_CLONE_NEWNS, _CLONE_NEWUSER = 0x00020000, 0x10000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 262144
_MS_RELATIME, _MNT_DETACH = 1 << 21, 2
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine)
# What a minimal root shows, read-only: the toolchain, system headers and libraries (merged-/usr symlinks are
# recreated as symlinks), the dynamic loader's cache, compiler alternatives; plus a few device nodes.
_ROOT_SHARED = [p for p in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache",
                            "/etc/alternatives") if os.path.lexists(p)]
_ROOT_DEVICES = [p for p in ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom") if os.path.exists(p)]
_LIBC = ctypes.CDLL(None, use_errno=True)
SANDBOX_UID_BASE, UIDS_PER_PROCESS = 1_000_000, 256  # programs run as a fresh uid from their judge's window
_uid_counter = itertools.count()
_IS_ROOT = os.geteuid() == 0
_TMP_PREFIX = "tinylora-judge-"  # run dirs: tinylora-judge-<pid>-*, in the system temp dir
_UNSHARE, _SETPRIV = shutil.which("unshare"), shutil.which("setpriv")
SANDBOX_LEVELS = ("rlimits", "namespaces", "minimal_root")  # weakest to strongest; see docs/judge.md


def _mount(source: str | None, target: str, fstype: str | None, flags: int, options: str | None = None) -> None:
    enc = (lambda s: None if s is None else s.encode())
    if _LIBC.mount(enc(source), enc(target), enc(fstype), flags, enc(options)):
        raise OSError(ctypes.get_errno(), f"mount {source} on {target}")


def _bind(source: str, target: str, readonly: bool) -> None:
    """Bind-mount source on target (created to match), then make it read-only and nosuid. A remount must keep
    the flags the source mount already has (the kernel locks them inside a user namespace), hence statvfs."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount(source, target, None, _MS_BIND)
    if readonly:
        have = os.statvfs(source).f_flag
        keep = have & (os.ST_NODEV | os.ST_NOEXEC | os.ST_NOATIME | os.ST_NODIRATIME)
        keep |= _MS_RELATIME if have & os.ST_RELATIME else 0
        _mount(None, target, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | keep)


def _enter_minimal_root(run_dir: str, readonly: dict[str, str], host_ids: tuple[int, int]) -> None:
    """In the forked child, before exec: a private mount namespace (inside a new user namespace when not
    root) whose root holds only _ROOT_SHARED and devices, `readonly` (jail path -> host path), the run's
    work dir as /box (read-write, the new cwd) and an empty /tmp. pivot_root, then the old root is detached:
    /home, /root, the checkout, datasets and caches are no longer reachable by any path."""
    if _LIBC.unshare(_CLONE_NEWNS if _IS_ROOT else _CLONE_NEWNS | _CLONE_NEWUSER):
        raise OSError(ctypes.get_errno(), "unshare mount namespace")
    if not _IS_ROOT:  # map ourselves to root in the new user namespace, which owns the new mount namespace
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {host_ids[0]} 1"), ("gid_map", f"0 {host_ids[1]} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    new = os.path.join(run_dir, "root")
    _mount("tmpfs", new, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=755")
    for path in _ROOT_SHARED:
        if os.path.islink(path):
            os.makedirs(os.path.dirname(new + path), exist_ok=True)
            os.symlink(os.readlink(path), new + path)
        else:
            _bind(path, new + path, readonly=True)
    for path in _ROOT_DEVICES:
        _bind(path, new + path, readonly=False)
    for jail_path, host_path in readonly.items():
        _bind(host_path, new + jail_path, readonly=True)
    _bind(os.path.join(run_dir, "box"), new + "/box", readonly=False)
    os.mkdir(new + "/tmp")
    _mount("tmpfs", new + "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, "size=64m,mode=1777")
    os.chdir(new)
    if _SYS_PIVOT_ROOT is None or _LIBC.syscall(_SYS_PIVOT_ROOT, b".", b"."):
        raise OSError(ctypes.get_errno(), "pivot_root")
    if _LIBC.umount2(b".", _MNT_DETACH):  # the old root, stacked under the new one
        raise OSError(ctypes.get_errno(), "detach old root")
    _mount(None, "/", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    os.chdir("/box")


def _namespace_prefix(features: dict) -> list[str]:
    """`unshare` for the net/ipc/uts/pid namespaces; as non-root also a user namespace, unless the minimal
    root already made one (whose root may create the others; it has no /proc for a nested uid map)."""
    if not features["pid_namespace"]:
        return []
    user = [] if _IS_ROOT or features["minimal_root"] else ["--user", "--map-root-user"]
    return [_UNSHARE, *user, "--net", "--ipc", "--uts", "--pid", "--fork", "--kill-child", "--"]


@contextlib.contextmanager
def _run_dir(owner: int | None = None):
    """A private directory per sandboxed run, removed afterwards: box/ is the work dir the process sees
    (as /box in a minimal root), root/ the empty mount point its minimal root is built on."""
    run_dir = tempfile.mkdtemp(prefix=_TMP_PREFIX + str(os.getpid()) + "-")
    try:
        os.mkdir(os.path.join(run_dir, "box"))
        os.mkdir(os.path.join(run_dir, "root"))
        if owner is not None:
            os.chown(os.path.join(run_dir, "box"), owner, owner)
        yield run_dir
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _box(run_dir: str, name: str = "") -> str:
    return os.path.join(run_dir, "box", name)


@dataclasses.dataclass
class _Run:
    returncode: int
    stdout: bytes
    stderr: bytes           # the first few KiB only
    wall_s: float
    cpu_s: float            # user + sys: rusage of what was waited for, or the last poll of the live tree if more
    maxrss_bytes: int       # 0 when unknown (see _sandboxed)
    timed_out: bool         # a wall-clock net fired (asleep too long, or the hard cap)
    output_exceeded: bool
    charged_s: float = 0.0  # what the time limit is decided on: user + sys less what page faults explain
    cpu_killed: bool = False  # the judge stopped it for CPU: charged time past the limit, or user + sys past the backstop
    cpu_rlimit_s: int = 0   # the RLIMIT_CPU it ran under (0: none)


# The CPU rules for programs (see _failure and docs/judge.md, "Which time counts"). While a program runs, the judge
# polls its whole process tree every _POLL_S (every thread and process, live or reaped) and stops it once its
# charged time passes the limit: user + system time, less _FAULT_S of system time per minor page fault. First-touch
# page faults cost 2-15 us each on the VMs this runs on, depending on the host's memory and load (well under 1 us
# on bare metal), so filling a 1 GiB limit costs 0.6-4 s of system time that says nothing about the program.
# Past the backstop (the limit + 1 s + the memory limit's pages at _FAULT_S each) of plain user + sys, the program
# is stopped too (one that faults forever); RLIMIT_CPU a second later is the kernel's guarantee behind the poll.
_POLL_S = 0.05
_FAULT_S = 30e-6
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _charged_s(user_s: float, sys_s: float, faults: int) -> float:
    """CPU seconds charged to the time limit: user + the system time that page faults do not explain."""
    return user_s + max(0.0, sys_s - faults * _FAULT_S)


def _cpu_backstop_s(limit_s: float, memory_bytes: int) -> float:
    """User + sys seconds after which a program is stopped whatever its charged time: the limit plus the system
    time filling the memory limit could take (pages x _FAULT_S) plus 1 s."""
    return limit_s + 1.0 + (memory_bytes >> 12) * _FAULT_S


def _tree_usage(pid: int) -> tuple[float, float, int, float]:
    """(user, sys, minor faults, busy) of pid and every live descendant, from /proc: each process's own (all its
    threads) plus its reaped children's; busy is the longest any one thread of the tree has been on a CPU or
    waiting for one, in seconds (/proc/.../schedstat; 0 where the kernel keeps none). A process that exits
    while it is read is skipped."""
    user = sys_ = busy = 0.0
    faults = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # fields[n - 3] is proc(5)'s field n
            minflt, cminflt, utime, stime, cutime, cstime = (int(fields[i]) for i in (7, 8, 11, 12, 13, 14))
            user += (utime + cutime) / _CLK_TCK
            sys_ += (stime + cstime) / _CLK_TCK
            faults += minflt + cminflt
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children", "rb") as f:
                    todo += [int(c) for c in f.read().split()]
                with contextlib.suppress(OSError, ValueError):
                    with open(f"/proc/{p}/task/{tid}/schedstat", "rb") as f:
                        on_cpu, waiting = f.read().split()[:2]
                    busy = max(busy, (int(on_cpu) + int(waiting)) / 1e9)
        except (OSError, ValueError, IndexError):
            continue
    return user, sys_, faults, busy


def _sandboxed(argv: list[str], run_dir: str, stdin: bytes, *, cpu_s: float, wall_s: float, memory_bytes: int,
               output_cap: int, stderr_cap: int = 4096, uid: int | None = None, nproc: int | None = None,
               fsize_bytes: int = 16 << 20, env: dict | None = None, readonly: dict[str, str] | None = None,
               limit_s: float | None = None, stack_bytes: int | None = None) -> _Run:
    """Run argv in run_dir's box with every limit applied; kill its whole process tree at the wall deadline.

    New session (so one killpg reaches every descendant that stayed in it), empty environment, stdin
    from a memfd, stdout read up to output_cap (the runner's memory stays bounded), rlimits in the child,
    and when available: a minimal root (see _enter_minimal_root; `readonly` adds mounts to it), new
    net/ipc/uts/pid namespaces (the pid namespace dies with the program, taking daemons along) and a
    private uid so RLIMIT_NPROC counts only this program.

    Without limit_s (the compiler): RLIMIT_CPU at cpu_s rounded up and a plain wall deadline at wall_s. With
    limit_s (programs and checkers): the process tree is polled every _POLL_S and stopped once its charged time
    (_charged_s) passes limit_s or its user + sys time passes cpu_s (cpu_killed); RLIMIT_CPU sits a second
    above cpu_s as the kernel's guarantee. The wall clock then only stops a program that has been asleep (neither on a CPU
    nor waiting for one) for wall_s, or that is still there at 4 x max(wall_s, cpu_s) however busy (a program
    given a quarter of a core or more meets its CPU limits first): a loaded machine slows a program down
    without changing its verdict.
    """
    features = sandbox_features()
    rlimit_cpu = max(1, math.ceil(cpu_s)) + (1 if limit_s is not None else 0)
    stack = min(memory_bytes, 1 << 30) if stack_bytes is None else stack_bytes
    limits = [(resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_CPU, rlimit_cpu),
              (resource.RLIMIT_FSIZE, fsize_bytes), (resource.RLIMIT_CORE, 0),
              (resource.RLIMIT_STACK, stack), (resource.RLIMIT_NOFILE, 64)]
    if nproc is not None and uid is not None:
        limits.append((resource.RLIMIT_NPROC, nproc))
    prefix = _namespace_prefix(features)
    if uid is not None:
        prefix += [_SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--"]
    minimal_root, host_ids = features["minimal_root"], (os.getuid(), os.getgid())

    def child_setup() -> None:  # runs between fork and exec: keep it to syscalls
        if minimal_root:
            _enter_minimal_root(run_dir, readonly or {}, host_ids)
        for res, value in limits:
            resource.setrlimit(res, (value, value))

    # The forked child's first exec folds this process's resident set into the child's ru_maxrss (Linux
    # exec_mmap), so a peak at or below our own says nothing about the program: report it as unknown (0).
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stdin_fd = os.memfd_create("stdin")
    os.write(stdin_fd, stdin)
    os.lseek(stdin_fd, 0, os.SEEK_SET)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(prefix + argv, cwd=_box(run_dir), env=env or {}, stdin=stdin_fd,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=child_setup)
    finally:
        os.close(stdin_fd)
    out, err = bytearray(), bytearray()
    timed_out = exceeded = exited = cpu_killed = False
    polled_charged = polled_total = 0.0
    polling = limit_s is not None
    deadline = start + (4 * max(wall_s, cpu_s) if polling else wall_s)
    next_poll = start + _POLL_S
    pidfd = os.pidfd_open(proc.pid)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        sel.register(pidfd, selectors.EVENT_READ, None)
        open_pipes = 2
        while open_pipes or not exited:
            now = time.monotonic()
            if polling and not exited and now >= next_poll:
                user, sys_, faults, busy = _tree_usage(proc.pid)
                polled_charged, polled_total = _charged_s(user, sys_, faults), user + sys_
                if polled_charged > limit_s or polled_total > cpu_s:
                    cpu_killed = True
                    break
                if now - start - busy > wall_s:  # asleep or blocked, not slowed down by a busy machine
                    timed_out = True
                    break
                next_poll = now + _POLL_S
            remaining = deadline - now
            if remaining <= 0:
                timed_out = not exited  # exited but a leftover holds the pipe: not the program's time
                break
            for key, _ in sel.select(min(remaining, next_poll - now) if polling and not exited else remaining):
                if key.data is None:  # the main process exited; give stragglers a moment to close pipes
                    exited = True
                    sel.unregister(pidfd)
                    deadline = min(deadline, time.monotonic() + 0.2)
                    continue
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
                elif key.data is out:
                    out += chunk
                    exceeded = len(out) > output_cap
                elif len(err) < stderr_cap:
                    err += chunk[: stderr_cap - len(err)]
            if exceeded:
                break
    os.close(pidfd)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the leader is not reaped yet, so this group id is still ours
    except ProcessLookupError:
        pass
    _, status, usage = os.wait4(proc.pid, 0)
    if uid is not None and not features["pid_namespace"]:
        _kill_uid(uid)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    proc.stderr.close()
    return _Run(proc.returncode, bytes(out[:output_cap]), bytes(err), time.monotonic() - start,
                max(usage.ru_utime + usage.ru_stime, polled_total),
                peak if (peak := usage.ru_maxrss * 1024) > own_peak else 0, timed_out, exceeded,
                max(_charged_s(usage.ru_utime, usage.ru_stime, usage.ru_minflt), polled_charged), cpu_killed,
                rlimit_cpu)


def _kill_uid(uid: int) -> None:
    """Without a pid namespace, a daemon that left the process group survives the killpg; as the run's
    private uid, kill(-1) reaches exactly the processes that uid owns (in a fork: only syscalls, then exit)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _probe(features: dict) -> bool:
    """Whether /bin/true runs under `features` (the sandbox as _sandboxed would set it up)."""
    true = shutil.which("true") or "/bin/true"
    with _run_dir() as run_dir:
        try:
            subprocess.run(_namespace_prefix(features) + [true], cwd=_box(run_dir), env={}, capture_output=True,
                           timeout=10, check=True, preexec_fn=(lambda: _enter_minimal_root(
                               run_dir, {}, (os.getuid(), os.getgid()))) if features["minimal_root"] else None)
            return True
        except (OSError, subprocess.SubprocessError):
            return False


@functools.lru_cache(maxsize=None)
def sandbox_features() -> dict:
    """Which isolation this kernel allows, probed once per process by actually starting /bin/true.

    pid_namespace/net_namespace: `unshare` works (as root, or via a user namespace otherwise);
    minimal_root: programs and the compiler see only the toolchain, system libraries and their work dir
    (bind mounts + pivot_root; as non-root inside a user namespace), and an empty private /tmp (so
    private_tmp too); private_uid: programs run as a fresh unprivileged uid (root only), which makes
    RLIMIT_NPROC effective against fork bombs. level: the strongest of SANDBOX_LEVELS reached.
    Anything short of minimal_root is logged once as a warning: programs can then read the test answers.
    """
    features = {"root": _IS_ROOT, "pid_namespace": False, "net_namespace": False, "private_tmp": False,
                "minimal_root": False, "private_uid": _IS_ROOT and _SETPRIV is not None}
    if _UNSHARE:
        features["pid_namespace"] = features["net_namespace"] = _probe({"pid_namespace": True, "minimal_root": False})
    features["minimal_root"] = features["private_tmp"] = _probe({**features, "minimal_root": True})
    features["level"] = ("minimal_root" if features["minimal_root"] else
                         "namespaces" if features["pid_namespace"] else "rlimits")
    if not features["minimal_root"]:
        logger.warning("judge sandbox level %r: could not build a minimal root, so generated programs and the "
                       "compiler can read every file this user can read, expected outputs included "
                       "(see docs/judge.md, 'Running it stricter')", features["level"])
    return features


def sandbox_uid_window(pid: int | None = None) -> range:
    """The uids a judge process hands out: disjoint for pids that differ modulo 4096, so concurrent judges
    do not share RLIMIT_NPROC counts or kill each other's programs; 256 concurrent runs per judge."""
    start = SANDBOX_UID_BASE + ((os.getpid() if pid is None else pid) % 4096) * UIDS_PER_PROCESS
    return range(start, start + UIDS_PER_PROCESS)


def _next_uid() -> int:
    return sandbox_uid_window()[next(_uid_counter) % UIDS_PER_PROCESS]


# ---------------------------------------------------------------------------------------------------------
# Compile (cached, with precompiled <bits/stdc++.h> and <iostream>)
# ---------------------------------------------------------------------------------------------------------

_COMPILE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"}
_DIAG = re.compile(r"^solution\.cpp:(\d+):(\d+): (?:fatal )?error: (.*)$")


@functools.lru_cache(maxsize=None)
def compiler_version(cxx: str) -> str:
    """The compiler's first --version line: part of every compile-cache key, and what verify_pipeline reports."""
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    return out.splitlines()[0] if out else cxx


def _sanitize(stderr: bytes) -> str:
    """Only 'solution.cpp:L:C: error: ...' lines, clipped: diagnostics located in other files can quote
    their contents (`#include "/etc/passwd"`), so those are counted but never shown."""
    lines = stderr.decode("utf-8", "replace").replace("\r", "").split("\n")
    mine = [f"{m[1]}:{m[2]}: {m[3][:160]}" for m in map(_DIAG.match, lines) if m]
    others = sum(1 for line in lines if ": error: " in line and not line.startswith("solution.cpp:"))
    text = "; ".join(mine[:5]) + (f"; +{others} error(s) in other files" if others else "")
    return "".join(c if c.isprintable() else "?" for c in text)[:800] or "compilation failed"


_PCH_HEADERS = ("bits/stdc++.h", "iostream")  # the usual first lines of model-written programs


def precompiled_headers(config: JudgeConfig) -> Path | None:
    """A directory of precompiled headers (bits/stdc++.h.gch, iostream.gch) built with exactly config's
    compiler and flags, for `-I`; None when none could be built.

    gcc uses one only when it is the program's first #include and its flags match, and it is the very
    header the program asked for, so verdicts do not change; it only skips re-parsing ~100 MB of templates.
    Built once per machine (`paths.built_once`, atomic rename); a failed header leaves a marker and is not retried.
    The build compiles only system headers, so it runs without the sandbox. judge_batch builds it on first use;
    calling this first builds it apart (a benchmark times the judge without this one-off cost).
    """
    key = hashlib.sha256(json.dumps([config.cxx, config.cxx_flags, compiler_version(config.cxx)]).encode())
    root = cache_dir() / "pch" / key.hexdigest()[:16]

    def tried(header: str) -> bool:
        return root.joinpath(header + ".gch").exists() or root.joinpath(header + ".failed").exists()

    def build_missing() -> None:
        root.joinpath("bits").mkdir(parents=True, exist_ok=True)
        for header in _PCH_HEADERS:
            if not tried(header):
                _build_pch(config, root, header)

    built_once(root, lambda: all(map(tried, _PCH_HEADERS)), build_missing)
    return root if any(root.joinpath(h + ".gch").exists() for h in _PCH_HEADERS) else None


def _build_pch(config: JudgeConfig, root: Path, header: str) -> None:
    gch = root / (header + ".gch")
    include = f"#include <{header}>\n".encode()
    try:
        probe = subprocess.run([config.cxx, *config.cxx_flags, "-x", "c++", "-E", "-H", "-", "-o", "/dev/null"],
                               input=include, capture_output=True, timeout=60)
        path = probe.stderr.decode().splitlines()[0].split(" ", 1)[1]  # ". /usr/include/.../header"
        tmp = gch.with_suffix(f".tmp{os.getpid()}")
        subprocess.run([config.cxx, *config.cxx_flags, "-x", "c++-header", path, "-o", str(tmp)],
                       capture_output=True, timeout=300, check=True)
        os.replace(tmp, gch)
        check = subprocess.run([config.cxx, *config.cxx_flags, "-I", str(root), "-H", "-fsyntax-only",
                                "-x", "c++", "-"], input=include + b"int main(){}\n", capture_output=True, timeout=60)
        if not check.stderr.startswith(b"!"):  # '!' = gcc used a precompiled header; otherwise it is useless
            gch.unlink()
            raise RuntimeError("precompiled header not used")
    except (OSError, IndexError, RuntimeError, subprocess.SubprocessError) as exc:
        logger.info("no precompiled <%s> (%s); compiling without it", header, exc)
        root.joinpath(header + ".failed").write_text(str(exc)[:500])


def _uses_pch(code: str) -> bool:
    return any(f"<{h}>" in code for h in _PCH_HEADERS)


def _compile_cache_key(code: str, config: JudgeConfig) -> str:
    """The sandbox level is part of the key: a binary built where the compiler could see user files
    (`.incbin` of the answers) must not be reused by a judge that isolates it."""
    return hashlib.sha256(json.dumps([code, config.cxx, config.cxx_flags, compiler_version(config.cxx),
                                      sandbox_features()["level"]]).encode()).hexdigest()


def compile_program(code: str, config: JudgeConfig = JudgeConfig()) -> tuple[Path | None, str, float]:
    """(executable or None, sanitised message, seconds). Results, failures included, are cached on disk
    by sha256(source, compiler, flags, compiler version, sandbox level): GRPO regrades the same program often."""
    start = time.monotonic()
    key = _compile_cache_key(code, config)
    entry = cache_dir() / "judge" / key[:2] / key
    for path in (entry, entry.with_suffix(".ce")):
        if path.exists():
            os.utime(path)  # mark as recently used for _prune_cache
            return (path, "", time.monotonic() - start) if path == entry else \
                   (None, path.read_text(), time.monotonic() - start)
    pch = precompiled_headers(config) if _uses_pch(code) else None
    # In a minimal root the precompiled headers are mounted read-only at /pch; otherwise used in place.
    jailed = sandbox_features()["minimal_root"]
    pch_arg = ("/pch" if jailed else str(pch)) if pch else None
    with _run_dir() as run_dir:
        Path(_box(run_dir, "solution.cpp")).write_text(code)
        argv = [config.cxx, *config.cxx_flags, *(["-I", pch_arg] if pch else []), "solution.cpp", "-o", "prog"]
        run = _sandboxed(argv, run_dir, b"", cpu_s=config.compile_timeout_s, wall_s=config.compile_timeout_s,
                         memory_bytes=config.compile_memory_mb << 20, output_cap=1 << 16, stderr_cap=1 << 16,
                         fsize_bytes=1 << 30, env={**_COMPILE_ENV, "TMPDIR": "/box" if jailed else _box(run_dir)},
                         readonly={"/pch": str(pch)} if pch else None)
        entry.parent.mkdir(parents=True, exist_ok=True)
        if run.returncode == 0 and not run.timed_out:
            shutil.move(_box(run_dir, "prog"), f"{entry}.tmp{threading.get_ident()}")
            os.replace(f"{entry}.tmp{threading.get_ident()}", entry)
            return entry, "", time.monotonic() - start
        if run.timed_out or run.cpu_s >= config.compile_timeout_s:
            message = f"compile timeout ({config.compile_timeout_s:g} s)"
        elif b"memory exhausted" in run.stderr or b"out of memory" in run.stderr or run.returncode < 0:
            message = f"compiler ran out of memory or was killed ({config.compile_memory_mb} MB limit)"
        else:
            message = _sanitize(run.stderr)
        entry.with_suffix(".ce").write_text(message)
        return None, message, time.monotonic() - start


def _prune_cache(max_bytes: int = 2 << 30) -> None:
    """Keep the compile cache under max_bytes by deleting the least recently used entries."""
    files = [e for d in (cache_dir() / "judge").glob("??") for e in os.scandir(d)]
    stats = [(f.stat().st_mtime, f.stat().st_size, f.path) for f in files]
    total = sum(s for _, s, _ in stats)
    for _, size, path in sorted(stats):
        if total <= max_bytes * 0.8:
            break
        Path(path).unlink(missing_ok=True)
        total -= size


# ---------------------------------------------------------------------------------------------------------
# Run and compare
# ---------------------------------------------------------------------------------------------------------

_INT = re.compile(rb"[+-]?\d+")
def outputs_match(actual: bytes, expected: str, how: str = "tokens") -> bool:
    """tokens: whitespace-separated tokens equal (CRLF, trailing spaces, blank lines ignored).
    tokens_nocase: tokens equal ignoring ASCII case ("YES", "Yes", "yes" alike).
    exact: the seed's rule, whole output stripped then equal (CRLF normalised to LF).
    float:<eps> (float = float:1e-6): tokens, but numbers match within eps absolute or relative, except
    that two integers must be equal; words compare exactly.
    Bytes are compared, so non-UTF-8 output is judged, never crashes the judge."""
    mode, eps = _compare_rule(how)
    want = expected.encode("utf-8", "surrogateescape")
    if mode == "exact":
        return actual.replace(b"\r\n", b"\n").strip() == want.replace(b"\r\n", b"\n").strip()
    got, ref = actual.split(), want.split()
    if mode == "tokens":
        return got == ref
    if mode == "tokens_nocase":
        return [g.lower() for g in got] == [r.lower() for r in ref]
    return len(got) == len(ref) and all(g == r or _close(g, r, eps) for g, r in zip(got, ref))


def _close(got: bytes, ref: bytes, eps: float) -> bool:
    if _INT.fullmatch(got) and _INT.fullmatch(ref):
        return False  # two different integers: never "close"
    try:
        a, b = float(got), float(ref)
    except ValueError:
        return False
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= eps * max(1.0, abs(b))


def _failure(run: _Run, config: JudgeConfig) -> Verdict | None:
    """The verdict of a run that did not finish cleanly, or None when it exited 0 within its limits (then
    its output decides). First match wins (docs/judge.md, "Which verdict wins"):

    1. OLE: the judge stopped it for writing more than output_limit_bytes.
    2. TLE: the judge stopped it for time: charged time past the limit (user + sys less what page faults explain,
       of every thread and process of the program, polled while it runs), user + sys past the backstop, or a
       wall net (asleep too long, or the hard cap).
    3. MLE: it failed by itself (nonzero exit or signal) after hitting the memory limit: it reported
       std::bad_alloc, or its peak RSS reached 90% of the limit (known only while the judging process is
       smaller than that), and the judge had not stopped it for time. A program that ran out of memory is MLE,
       as on a judge where page faults are cheap.
    4. TLE: its charged time at exit was past the limit (it ended between two polls), or it was killed while its
       user + sys time stood within 0.5 s of RLIMIT_CPU (the kernel's SIGKILL; `unshare` reports that as
       exit 1, and the CPU time read back can sit a little under the limit).
    5. RE: any other nonzero exit or signal.
    """
    if run.output_exceeded:
        return Verdict.OLE
    if run.cpu_killed or run.timed_out:
        return Verdict.TLE
    memory = config.memory_mb << 20
    if run.returncode != 0 and (b"bad_alloc" in run.stderr or run.maxrss_bytes >= 0.9 * memory):
        return Verdict.MLE
    if run.charged_s > config.time_limit_s:
        return Verdict.TLE
    if run.returncode != 0:
        return Verdict.TLE if run.cpu_rlimit_s and run.cpu_s >= run.cpu_rlimit_s - 0.5 else Verdict.RE
    return None


def _run_exe(exe: Path, config: JudgeConfig, stdin: bytes, *, cpu_s: float, output_cap: int,
             args: tuple[str, ...] = (), files: dict[str, bytes] | None = None) -> _Run:
    """Run a compiled program (a hard link to its cache entry) in a fresh run dir, as a fresh uid when root;
    `files` are written into its work dir first (read-only for it). cpu_s is its limit on charged time; the
    stack is unlimited (bounded by the address space) so that threads get glibc's default stack instead of
    one the size of the memory limit each."""
    uid = _next_uid() if sandbox_features()["private_uid"] else None
    memory = config.memory_mb << 20
    with _run_dir(owner=uid) as run_dir:
        try:
            os.link(exe, _box(run_dir, "prog"))  # the cache dir may not be reachable for the program's uid
        except OSError:
            shutil.copy2(exe, _box(run_dir, "prog"))
        for name, content in (files or {}).items():
            Path(_box(run_dir, name)).write_bytes(content)
        return _sandboxed(["./prog", *args], run_dir, stdin, cpu_s=_cpu_backstop_s(cpu_s, memory),
                          wall_s=2 * cpu_s + 1.0, memory_bytes=memory, output_cap=output_cap, uid=uid,
                          nproc=config.max_processes, fsize_bytes=config.file_size_mb << 20, limit_s=cpu_s,
                          stack_bytes=resource.RLIM_INFINITY)


def _checker_accepts(checker: Path, test_input: bytes, output: bytes, answer: bytes, config: JudgeConfig) -> bool:
    """Run the problem's checker in the same sandbox, testlib style: `checker input output answer` where
    output is the program's and answer the expected one; exit 0 accepts, 1 or 2 (testlib's WA and
    presentation error) reject. Anything else is a broken checker: logged as an error, judged as WA."""
    run = _run_exe(checker, config, b"", cpu_s=config.checker_time_limit_s, output_cap=1 << 16,
                   args=("input.txt", "output.txt", "answer.txt"),
                   files={"input.txt": test_input, "output.txt": output, "answer.txt": answer})
    if run.returncode in (0, 1, 2) and not run.timed_out and not run.cpu_killed:
        return run.returncode == 0
    logger.error("checker failed (exit %s%s): %s", run.returncode,
                 ", timed out" if run.timed_out or run.cpu_killed else "",
                 run.stderr[:300].decode("utf-8", "replace"))
    return False


def run_test(exe: Path, test: dict, config: JudgeConfig = JudgeConfig(),
             checker: Path | None = None) -> tuple[Verdict, float]:
    """Run one test in a fresh process and private run dir; (verdict, wall seconds). With a compiled
    `checker` (config.checker), the checker decides whether the output is right, else config.compare."""
    stdin = str(test.get("input", "")).encode("utf-8", "surrogateescape")
    expected = str(test.get("output", ""))
    run = _run_exe(exe, config, stdin, cpu_s=config.time_limit_s, output_cap=config.output_limit_bytes)
    verdict = _failure(run, config)
    if verdict is None:
        right = (_checker_accepts(checker, stdin, run.stdout, expected.encode("utf-8", "surrogateescape"), config)
                 if checker else outputs_match(run.stdout, expected, config.compare))
        verdict = Verdict.OK if right else Verdict.WA
    return verdict, run.wall_s


# ---------------------------------------------------------------------------------------------------------
# Judge one program / a batch
# ---------------------------------------------------------------------------------------------------------

def select_tests(tests: list[dict], max_tests: int, how: str = "first") -> list[dict]:
    """At most max_tests tests (<= 0 means all): the first ones, or the longest inputs (DeepCoder's
    choice: long inputs are the ones that catch slow or wrong programs), kept in their original order."""
    if max_tests <= 0 or len(tests) <= max_tests:
        return list(tests)
    if how == "first":
        return list(tests[:max_tests])
    if how != "longest":
        raise ValueError(f"unknown test selection {how!r}: use first or longest")
    keep = sorted(range(len(tests)), key=lambda i: -len(str(tests[i].get("input", ""))))[:max_tests]
    return [tests[i] for i in sorted(keep)]


def _run_all(exe: Path, tests: list[dict], config: JudgeConfig, compile_s: float,
             checker: Path | None) -> JudgeResult:
    verdicts, run_s = [], 0.0
    for test in tests:
        verdict, seconds = run_test(exe, test, config, checker)
        verdicts.append(verdict)
        run_s += seconds
        if config.binary and verdict is not Verdict.OK:
            break
    passed = verdicts.count(Verdict.OK)
    overall = next((v for v in verdicts if v is not Verdict.OK), Verdict.OK)
    return JudgeResult(True, verdicts, passed, len(tests), overall, compile_s, run_s)


def _compile_settings(config: JudgeConfig) -> JudgeConfig:
    """Only what compiling depends on, so programs judged under different run limits compile once."""
    return JudgeConfig(cxx=config.cxx, cxx_flags=config.cxx_flags, compile_timeout_s=config.compile_timeout_s,
                       compile_memory_mb=config.compile_memory_mb)


def judge_program(code: str | None, tests: list[dict], config: JudgeConfig = JudgeConfig()) -> JudgeResult:
    """Compile code and run it on (the selected) tests."""
    return judge_batch([(code, tests)], config)[0]


def judge_batch(items: list[tuple[str | None, list[dict]] | tuple[str | None, list[dict], JudgeConfig]],
                config: JudgeConfig = JudgeConfig(), progress: bool = False) -> list[JudgeResult]:
    """Judge many (code, tests) pairs on a thread pool sized to config.workers (default: every core).

    An item may carry its own JudgeConfig as a third element (a problem's limits, compare rule and
    checker: see problem_judge_config); items without one use `config`. Identical programs are compiled
    once and identical (program, tests, config) triples run once per batch, as GRPO groups often repeat a
    completion. A checker that does not compile is a data error: ValueError. Threads suffice: the work
    happens in child processes.
    """
    from tqdm import tqdm

    configs = [item[2] if len(item) > 2 else config for item in items]
    selected = [select_tests(list(item[1]), c.max_tests, c.test_selection) for item, c in zip(items, configs)]
    sources = sorted({(item[0], _compile_settings(c)) for item, c in zip(items, configs) if item[0]}, key=str)
    checkers = sorted({(c.checker, _compile_settings(c)) for c in configs if c.checker}, key=str)
    workers = config.workers or os.cpu_count() or 1
    sandbox_features()  # probe once, before threads start forking
    for settings in {s for code, s in sources + checkers if _uses_pch(code)}:
        precompiled_headers(settings)  # build it once here rather than racing to build it from every worker
    with ThreadPoolExecutor(workers) as pool:
        compiled = dict(zip(sources + checkers, tqdm(pool.map(lambda job: compile_program(*job), sources + checkers),
                                                     total=len(sources + checkers), desc="compile",
                                                     disable=not progress)))
        broken = [message for job, (exe, message, _) in compiled.items() if job in checkers and exe is None]
        if broken:
            raise ValueError(f"a problem's checker does not compile: {broken[0]}")
        jobs: dict[tuple, object] = {}
        for item, tests, c in zip(items, selected, configs):
            exe, _, compile_s = compiled.get((item[0], _compile_settings(c)), (None, "", 0.0))
            key = (item[0], json.dumps(tests, sort_keys=True), c)
            if exe and key not in jobs:
                checker = compiled[(c.checker, _compile_settings(c))][0] if c.checker else None
                jobs[key] = pool.submit(_run_all, exe, tests, c, compile_s, checker)
        for future in tqdm(list(jobs.values()), desc="run", disable=not progress):
            future.result()
    if sources:
        _prune_cache()
    results = []
    for item, tests, c in zip(items, selected, configs):
        code = item[0]
        if not code:
            results.append(JudgeResult(False, [], 0, len(tests), Verdict.NO_CODE, message="no code found"))
            continue
        exe, message, seconds = compiled[(code, _compile_settings(c))]
        if exe is None:
            results.append(JudgeResult(False, [], 0, len(tests), Verdict.CE, seconds, 0.0, message))
        else:
            result = jobs[(code, json.dumps(tests, sort_keys=True), c)].result()
            results.append(JudgeResult(**{**result.__dict__, "verdicts": list(result.verdicts)}))
    return results


# ---------------------------------------------------------------------------------------------------------
# Reward
# ---------------------------------------------------------------------------------------------------------

# The seed's REWARD_SCALING_CONFIG (source -> difficulty -> multiplier), keyed by the names data.py uses
# instead of the code_contests enum numbers (2 = Codeforces, 5 = AtCoder, 1 = CodeChef, 3 = HackerEarth).
REWARD_SCALING_CONFIG = {
    "CODEFORCES": {"A": 1.0, "B": 1.1},
    "ATCODER": {"A": 1.0, "B": 1.1},
    "CODECHEF": {"EASY": 1.0},
    "HACKEREARTH": {"EASY": 1.0},
}


def difficulty_multiplier(source: str, difficulty: str) -> float:
    """The seed's reward multiplier for a problem (harder problems pay more); 1.0 when not listed."""
    return REWARD_SCALING_CONFIG.get(str(source).upper(), {}).get(str(difficulty).upper(), 1.0)


def reward_from_result(result: JudgeResult, scheme: str = "seed", multiplier: float = 1.0,
                       no_code_penalty: float = 0.0) -> float:
    """seed: no code or CE 0.0; compiled but 0/N passed 0.5; k/N passed 0.5 + 0.5k/N (so all = 1.0).
    binary: 1.0 only when every test passed (DeepCoder). The multiplier scales the base reward;
    no code at all scores -no_code_penalty, so format failures can be pushed below CE."""
    if result.verdict is Verdict.NO_CODE:
        return -no_code_penalty if no_code_penalty else 0.0  # never -0.0 in logs and JSON
    if scheme == "binary":
        base = float(result.compiled and result.total > 0 and result.passed == result.total)
    elif scheme == "seed":
        base = 0.5 + 0.5 * result.passed / result.total if result.compiled and result.total else 0.5 * result.compiled
    else:
        raise ValueError(f"unknown reward scheme {scheme!r}: use {' or '.join(REWARD_SCHEMES)}")
    return base * multiplier


REWARD_SCHEMES = ("seed", "binary")


def _completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if m.get("role", "assistant") == "assistant")


@dataclasses.dataclass
class CodeReward:
    """The reward: judge each completion's program on its problem's tests and score the verdicts.

    One object holds everything that decides a reward (the judge's limits, the scheme, the no-code penalty, the
    seed's difficulty multipliers), so training, validation and evaluation that share it cannot disagree. It is
    a TRL reward function (TRL names it by `__name__`) and keeps its last batch's statistics in `last_stats`.
    """

    judge: JudgeConfig = dataclasses.field(default_factory=JudgeConfig)
    scheme: str = "seed"
    no_code_penalty: float = 0.0
    multipliers: bool = True
    last_stats: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)
    __name__ = "code_reward"  # instances only; TRL logs rewards/code_reward/...

    def __post_init__(self) -> None:
        if self.scheme not in REWARD_SCHEMES:
            raise ValueError(f"unknown reward scheme {self.scheme!r}: use {' or '.join(REWARD_SCHEMES)}")
        if self.scheme == "binary":  # the first failure decides the reward: skip the remaining tests
            self.judge = dataclasses.replace(self.judge, binary=True)

    def columns(self, tests: list[dict], problem: dict) -> dict:
        """The dataset columns this reward reads for one problem: the tests its judge runs (max_tests of them, chosen
        by test_selection) and the problem's own limits, compare rule and checker (PROBLEM_JUDGE_FIELDS)."""
        return {"tests": select_tests(tests, self.judge.max_tests, self.judge.test_selection),
                **{k: problem.get(k) for k in PROBLEM_JUDGE_FIELDS}}

    def score(self, result: JudgeResult, source: str = "", difficulty: str = "") -> float:
        """One judged program's reward under this object's scheme, multiplier and penalty."""
        multiplier = difficulty_multiplier(source, difficulty) if self.multipliers else 1.0
        return reward_from_result(result, self.scheme, multiplier, self.no_code_penalty)

    def __call__(self, prompts, completions, tests=None, **kwargs) -> list[float]:
        """TRL's reward signature: one float per completion. Optional dataset columns `source` and `difficulty`
        select the seed's multipliers. Logs a verdict histogram through TRL's `log_metric` when given.

        Refuses to run without the `tests` column (the seed's bug: TRL dropped it and every reward was 0). Each row's
        tests are a flat list of {input, output}, as data.grpo_rows writes them (`columns`) (a problem record's grouped
        tests flatten with data.all_tests)."""
        n = len(completions)
        if tests is None or len(tests) != n or not all(tests):
            raise RuntimeError("the reward function did not receive the `tests` column; keep remove_unused_columns=False")
        if any(isinstance(t, dict) for t in tests):
            raise TypeError("each row's tests must be a list of {input, output}; flatten a record's with data.all_tests")
        start = time.monotonic()
        codes = [extract_code(_completion_text(c)) for c in completions]
        test_lists = [list(t) for t in tests]
        # each row's own limits, compare rule and checker (training rows carry the record's PROBLEM_JUDGE_FIELDS)
        problems = [{k: (kwargs.get(k) or [None] * n)[i] for k in PROBLEM_JUDGE_FIELDS} for i in range(n)]
        results = judge_batch([(code, t, problem_judge_config(p, self.judge))
                               for code, t, p in zip(codes, test_lists, problems)], self.judge)
        sources, difficulties = kwargs.get("source") or [""] * n, kwargs.get("difficulty") or [""] * n
        rewards = [self.score(r, s, d) for r, s, d in zip(results, sources, difficulties)]
        hist = Counter(r.verdict.value for r in results)
        self.last_stats = {"verdicts": {v.value: hist.get(v.value, 0) for v in Verdict},
                           "compile_rate": sum(r.compiled for r in results) / max(n, 1),
                           "full_pass_rate": sum(r.verdict is Verdict.OK for r in results) / max(n, 1),
                           "no_code_rate": hist.get("NO_CODE", 0) / max(n, 1),
                           "mean_reward": sum(rewards) / max(n, 1), "judge_s": time.monotonic() - start}
        logger.info("judge: %s", " ".join(f"{k}={v}" for k, v in hist.most_common()))
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            for verdict, count in self.last_stats["verdicts"].items():
                log_metric(f"judge/{verdict}", count / max(n, 1))
            for name in ("compile_rate", "full_pass_rate", "no_code_rate", "judge_s"):
                log_metric(f"judge/{name}", self.last_stats[name])
        return rewards
