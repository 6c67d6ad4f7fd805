"""Running untrusted code: a subprocess with limits, no network, and a throwaway folder.

Walls, outermost first:
* a fresh temporary working folder, deleted afterwards, and a minimal environment;
* when run as root: a new, empty network namespace (no interfaces, so no network at all) and a
  drop to the unprivileged ``nobody`` user, so nothing the code does can touch files it does not
  own;
* resource limits: CPU seconds, address space (memory), number of processes (fork bombs), size
  of files written; a wall-clock timeout after which the whole process group is killed;
* inside the interpreter, an audit hook (sandbox_guard.py) that refuses sockets, ctypes, starting
  other programs, signals, and writes or deletions outside the working folder: the wall that
  holds when not run as root.

The program runs on the standard library only (an interpreter the ``nobody`` user may execute,
which need not be the one fidan runs in).
"""
from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

GUARD = Path(__file__).with_name("sandbox_guard.py")
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0
    memory_mb: int = 512
    processes: int = 64
    file_mb: int = 16


@dataclass
class Outcome:
    status: str          # "passed", "failed" or "timeout"
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _nobody() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    try:
        import pwd
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return None


def _world_runnable(path: str) -> bool:
    """Whether an unprivileged user could execute ``path`` (o+x on every folder, o+rx on the file)."""
    real = Path(os.path.realpath(path))
    try:
        if (real.stat().st_mode & 0o005) != 0o005:
            return False
        return all(p.stat().st_mode & 0o001 for p in real.parents)
    except OSError:
        return False


def interpreter(drop_privileges: bool) -> str | None:
    """A Python the sandbox can run: this one, or, when dropping to ``nobody``, one it may execute."""
    if not drop_privileges:
        return sys.executable
    for candidate in (sys.executable, shutil.which("python3") or "", "/usr/bin/python3", "/usr/local/bin/python3"):
        if candidate and _world_runnable(candidate):
            return candidate
    return None


def _preexec(limits: Limits, user: tuple[int, int] | None):
    def setup() -> None:
        os.setsid()
        if os.geteuid() == 0:
            ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET)
        cpu = int(limits.timeout_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        memory = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * 1024 * 1024,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if user:
            os.setgroups([])
            os.setgid(user[1])
            os.setuid(user[0])
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
    return setup


def run_python(code: str, limits: Limits = Limits()) -> Outcome:
    """Run ``code`` as a Python program in the sandbox; passed means exit status 0 in time."""
    user = _nobody()
    python = interpreter(user is not None)
    if python is None:  # no interpreter the unprivileged user may run: stay, behind the guard alone
        user, python = None, sys.executable
    work = Path(tempfile.mkdtemp(prefix="fidan-sandbox-"))
    try:
        program = work / "program.py"
        program.write_text(code, encoding="utf-8")
        guard = work / "guard.py"
        shutil.copyfile(GUARD, guard)
        if user:
            for p in (work, program, guard):
                os.chown(p, *user)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
        start = time.perf_counter()
        proc = subprocess.Popen([python, "-I", "-B", str(guard), str(program)], cwd=work, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=_preexec(limits, user))
        try:
            out, err = proc.communicate(timeout=limits.timeout_s)
            status = "passed" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            status = "timeout"
            out, err = b"", b""
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the program and anything it forked
            except ProcessLookupError:
                pass
            if status == "timeout":
                out, err = proc.communicate()
        return Outcome(status, proc.returncode, out.decode(errors="replace")[-4000:],
                       err.decode(errors="replace")[-4000:], time.perf_counter() - start)
    finally:
        shutil.rmtree(work, ignore_errors=True)
