"""Running untrusted code: an operating-system sandbox, and a score the code cannot write.

**The walls** (bubblewrap, ``bwrap``; Debian's ``bubblewrap`` package). Each run gets new user,
mount, PID, network, IPC and UTS namespaces. The only file system it sees is ``/usr`` (the
interpreter and its standard library) bound read-only, a fresh ``/proc`` for its own PID
namespace, a minimal ``/dev`` (read-only, with a small tmpfs on ``/dev/shm``) and a private tmpfs
of bounded size on ``/tmp``, the only writable place; the project, the run directories, ``/root``,
the home folder and ``/etc`` (``/etc/shadow`` included) do not exist in it. Its network namespace
has only its own loopback, so ``127.0.0.1`` is not the host's. When fidan runs as root, bwrap
itself is started as ``nobody``, so the sandbox has no capabilities anywhere and its processes
count against their own process limit. ``--die-with-parent`` ties it to fidan,
``--new-session`` detaches it from the terminal, ``--disable-userns`` stops it from nesting
namespaces. The supervisor (below) is the namespace's init (``--as-pid-1``): processes inside
cannot signal it, and when it ends the kernel kills everything else in the namespace. Before any
untrusted code starts it sets limits on CPU seconds, address space, processes and file size.
After the verdict, or at the wall-clock timeout, fidan kills it from outside, which takes every
process in the namespace with it (a ``setsid()`` daemon or a double-forked child is still in
the PID namespace), and then checks that no process of that namespace is left.

**The score.** The completion and the tests never share an interpreter (sandbox_runner.py). A
*worker* process runs the prompt and the completion and answers calls; a *supervisor* process,
which never runs the completion's code, runs the problem's tests in its own interpreter with
``candidate`` standing for a stub that sends the arguments to the worker and turns the answer
back into fresh built-in values (numbers, strings, lists, ...). Only the supervisor holds the
result descriptor, and fidan reads the verdict from there, never from an exit status or stdout.
So:

* ``os._exit(0)``, ``raise SystemExit(0)``, killing a process, a crash: the worker dies, the
  stub raises in the supervisor's ``check``, the verdict is "failed" (or nothing arrives:
  "failed"/"timeout"). The exit status is ignored.
* Patching builtins, ``assert``'s helpers, ``check`` or the stub, ``sys.settrace``, threads,
  ``atexit``, objects whose ``__eq__`` always says yes: all of that happens in the worker's
  interpreter; the supervisor compares plain values it decoded itself, with its own builtins.
* Printing fake pass markers: stdout is for the log only.
* Writing to the result descriptor: the worker never has it (it is not inherited, the
  supervisor makes itself non-dumpable so ``/proc/PID/fd`` and ``/proc/PID/mem`` are closed to
  processes of the same user, and the namespace has no capabilities to ptrace with). As a second
  lock, the verdict line must begin with a per-run secret that fidan creates and sends only
  after the supervisor reports "ready", and the supervisor reports "ready" only after it has
  killed every other process in the sandbox: by the time the secret exists, no process that ran
  completion code is alive to see it. A line without the secret counts as "failed".
* Killing or stopping the supervisor: signals from inside do not reach a namespace's init; and
  without a verdict there is no pass. fidan is outside the PID namespace and cannot be seen.

What this does not catch: a completion that hard-codes the expected answers. And the tests see
copies: arguments go to the worker as data, so a test that checks a mutation of its own argument
would not see it (none of HumanEval's does).

The audit hook (sandbox_guard.py) stays in the worker as an extra layer that turns common misuse
into a clear error. Where bwrap is missing or cannot create namespaces, code is not run unless
the user says ``--eval.unsafe_code=true``; then the older path is used: a subprocess with the
same supervisor and worker, rlimits, a new network namespace and the ``nobody`` user when root,
and the audit hook; but a daemon can outlive it, the host's files are visible to it, and as an
ordinary user it runs as you, next to fidan itself.
"""
from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fidan.errors import FidanError

HERE = Path(__file__).parent
GUARD = HERE / "sandbox_guard.py"
RUNNER = HERE / "sandbox_runner.py"
CLONE_NEWNET = 0x40000000
NOBODY = 65534
KEEP_OUTPUT = 64 * 1024
UNSAFE_HINT = "pass --eval.unsafe_code=true to run it in a plain subprocess instead (no OS isolation)"


class SandboxUnavailable(FidanError):
    """No OS isolation here, and running untrusted code without it was not allowed."""


class SandboxError(FidanError):
    """The sandbox itself failed (not the code in it)."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0
    memory_mb: int = 512
    processes: int = 64
    file_mb: int = 16
    disk_mb: int = 64   # size of the private /tmp


@dataclass
class Outcome:
    status: str          # "passed", "failed" or "timeout"
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    detail: str = ""     # the supervisor's reason for a failure
    isolated: bool = True

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# ------------------------------------------------------------------ what the sandbox runs with
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


def _runtime() -> tuple[str, list[str]] | None:
    """The interpreter for the bwrap sandbox, and the host folders it needs beyond /usr.

    The system's Python under /usr is preferred (nothing else need be visible); otherwise the
    base interpreter fidan runs on (not its virtual environment) with its prefix bound read-only.
    """
    drop = os.geteuid() == 0
    base = os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
    choices = [(base, sys.base_prefix)] if base.startswith("/usr/") else []
    choices += [("/usr/bin/python3", "/usr"), ("/usr/local/bin/python3", "/usr/local"), (base, sys.base_prefix)]
    for python, prefix in choices:
        if not os.path.exists(python) or (drop and not _world_runnable(python)):
            continue
        python = os.path.realpath(python)
        extra = [] if prefix == "/usr" or prefix.startswith("/usr/") else [os.path.realpath(prefix)]
        return python, extra
    return None


def _bwrap_command(python: str, extra: list[str], limits: Limits, info_fd: int) -> list[str]:
    cmd = [shutil.which("bwrap") or "bwrap", "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
           "--unshare-uts", "--unshare-cgroup-try", "--disable-userns", "--uid", str(NOBODY), "--gid", str(NOBODY),
           "--hostname", "sandbox", "--die-with-parent", "--new-session", "--as-pid-1", "--clearenv",
           "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            cmd += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            cmd += ["--ro-bind", top, top]
    for path in extra:
        cmd += ["--ro-bind", path, path]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(16 * 1024 * 1024), "--tmpfs", "/dev/shm",
            "--remount-ro", "/dev", "--size", str(limits.disk_mb * 1024 * 1024), "--tmpfs", "/tmp",
            "--dir", "/tmp/work", "--remount-ro", "/", "--chdir", "/tmp/work",
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp/work", "--setenv", "TMPDIR", "/tmp",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--info-fd", str(info_fd), python, "-I", "-S", "-B", "-c", RUNNER.read_text(), "supervisor"]
    return cmd


_probe_lock = threading.Lock()
_probe: list[str | None] = []


def unavailable() -> str | None:
    """Why the OS sandbox cannot run here (one line), or None when it can. Probed once."""
    with _probe_lock:
        if not _probe:
            _probe.append(_probe_reason())
        return _probe[0]


def _probe_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the code sandbox needs Linux namespaces"
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed (apt-get install bubblewrap)"
    if _runtime() is None:
        return "no Python interpreter the unprivileged sandbox user may run (/usr/bin/python3)"
    try:
        out = _run_bwrap({"prompt": "def f(x):\n", "source": "def f(x):\n    return 2 * x\n",
                          "test": "def check(c):\n    assert c(21) == 42\n", "entry_point": "f",
                          "guard": GUARD.read_text()}, Limits(timeout_s=20))
    except SandboxError as e:
        return f"bubblewrap cannot isolate code here ({e})"
    if not out.passed:
        tail = (out.stderr.strip().splitlines() or [out.detail or out.status])[-1]
        return f"bubblewrap cannot isolate code here ({tail[:200]})"
    return None


# ------------------------------------------------------------------ running one job
def run_python(code: str, limits: Limits = Limits(), unsafe: bool = False, audit_hook: bool = True) -> Outcome:
    """Run ``code`` as a program in the sandbox. "passed" here means it ran to its end (by its
    own account: a plain program has no tests to judge it); scores use :func:`run_tests`.
    ``audit_hook=False`` leaves out the in-interpreter guard (tests use it to check that the
    operating system's walls hold on their own)."""
    return _run({"prompt": "", "source": code, "test": "", "entry_point": None}, limits, unsafe, audit_hook)


def run_tests(prompt: str, completion: str, test: str, entry_point: str, limits: Limits = Limits(),
              unsafe: bool = False, audit_hook: bool = True) -> Outcome:
    """Run ``prompt + completion`` in the worker and ``test`` + ``check(entry_point)`` in the
    supervisor; "passed" only when ``check`` returned there."""
    return _run({"prompt": prompt, "source": prompt + completion, "test": test, "entry_point": entry_point},
                limits, unsafe, audit_hook)


def _run(job: dict, limits: Limits, unsafe: bool, audit_hook: bool = True) -> Outcome:
    job["guard"] = GUARD.read_text() if audit_hook else ""
    reason = unavailable()
    if reason is None:
        return _run_bwrap(job, limits)
    if not unsafe:
        raise SandboxUnavailable(f"refusing to run untrusted code: {reason}; {UNSAFE_HINT}")
    return _run_unsafe(job, limits)


def _run_bwrap(job: dict, limits: Limits) -> Outcome:
    runtime = _runtime()
    if runtime is None:
        raise SandboxError("no interpreter for the sandbox")
    info_r, info_w = os.pipe()
    res_r, res_w = os.pipe()
    sec_r, sec_w = os.pipe()
    user = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}
    try:
        proc = subprocess.Popen(_bwrap_command(*runtime, limits, info_w), env={}, cwd="/",
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(info_w, res_w, sec_r), start_new_session=True, **user)
    except OSError as e:
        for fd in (info_r, info_w, res_r, res_w, sec_r, sec_w):
            os.close(fd)
        raise SandboxError(f"cannot start bwrap ({e})") from None
    for fd in (info_w, res_w, sec_r):
        os.close(fd)
    namespace = _Namespace(proc, info_r)
    try:
        return _talk(proc, job, limits, (res_r, sec_w, res_w, sec_r), "namespace", namespace.kill, namespace)
    finally:
        namespace.kill()
        namespace.close()
        os.close(res_r)
        os.close(sec_w)


def _run_unsafe(job: dict, limits: Limits) -> Outcome:
    user = None
    if os.geteuid() == 0:
        try:
            import pwd
            entry = pwd.getpwnam("nobody")
            user = (entry.pw_uid, entry.pw_gid)
        except KeyError:
            pass
    python = interpreter(user is not None)
    if python is None:  # no interpreter the unprivileged user may run: stay, behind the guard alone
        user, python = None, sys.executable
    work = Path(tempfile.mkdtemp(prefix="fidan-sandbox-"))
    res_r, res_w = os.pipe()
    sec_r, sec_w = os.pipe()
    try:
        if user:
            os.chown(work, *user)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
        proc = subprocess.Popen([python, "-I", "-S", "-B", "-c", RUNNER.read_text(), "supervisor"], cwd=work,
                                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(res_w, sec_r), preexec_fn=_preexec(limits, user))
        os.close(res_w)
        os.close(sec_r)
        numbers, res_w, sec_r = (res_w, sec_r), -1, -1

        def kill() -> None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the supervisor, and what kept its group
            except (ProcessLookupError, PermissionError):
                pass
        try:
            outcome = _talk(proc, job, limits, (res_r, sec_w, *numbers), "process", kill, None,
                            user[0] if user else os.getuid())
        finally:
            kill()
            proc.wait()
        outcome.isolated = False
        return outcome
    finally:
        for fd in (res_w, sec_r, res_r, sec_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(work, ignore_errors=True)


def _preexec(limits: Limits, user: tuple[int, int] | None):
    def setup() -> None:
        import ctypes
        import resource
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


def _pidfd(pid: int) -> int | None:
    """A descriptor that names this process and no later one with the same number (Linux 5.3+)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _signal(pid: int, pidfd: int | None) -> None:
    try:
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, ..."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


class _Namespace:
    """The sandbox's PID namespace, found through bwrap's info descriptor, and its killing.

    PIDs are reused (pid_max can be as low as 32768), so the supervisor is held by a pidfd taken
    while it is known to be bwrap's child, and every other kill re-checks the namespace first."""

    def __init__(self, proc: subprocess.Popen, info_r: int):
        self.proc, self.info_r = proc, info_r
        self.init_pid: int | None = None
        self.init_fd: int | None = None
        self.ns: str | None = None
        self.killed = False

    def read_info(self, data: bytes) -> None:
        """bwrap's first message: the host PID of the namespace's init, the supervisor."""
        if self.init_pid is not None:
            return
        try:
            info = json.loads(data.decode())
            pid, ns = int(info["child-pid"]), info.get("pid-namespace")
        except (ValueError, KeyError, TypeError):
            return
        fd = _pidfd(pid)
        stat = _stat(pid)  # checked after the pidfd exists: then the pidfd names bwrap's own child
        if len(stat) > 1 and stat[1] == str(self.proc.pid):
            self.init_pid, self.init_fd = pid, fd
            try:
                self.ns = f"pid:[{int(ns)}]" if ns is not None else os.readlink(f"/proc/{pid}/ns/pid")
            except (OSError, ValueError, TypeError):
                pass
        elif fd is not None:
            os.close(fd)

    def members(self) -> list[int]:
        """Live processes (not zombies) in the sandbox's PID namespace."""
        if self.ns is None:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.proc.pid and self._inside(int(entry)):
                pids.append(int(entry))
        return pids

    def _inside(self, pid: int) -> bool:
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") != self.ns:
                return False
        except OSError:
            return False
        stat = _stat(pid)
        return bool(stat) and stat[0] not in "ZX"

    def kill(self) -> None:
        """Kill the supervisor (the namespace's init: the kernel then kills everything in it),
        let bwrap reap it and end, and make sure nothing in the namespace is left."""
        if self.killed:
            return
        self.killed = True
        if self.init_fd is not None:
            _signal(self.init_pid, self.init_fd)
        elif self.init_pid is not None and self.proc.poll() is None and self._inside(self.init_pid):
            _signal(self.init_pid, None)  # no pidfd: bwrap alive, so its child's number is not reused yet
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # Popen signals only a child it has not reaped
        self.proc.wait()
        deadline = time.monotonic() + 10
        while (left := self.members()):
            if time.monotonic() > deadline:
                raise SandboxError(f"processes {left} of a sandbox would not die")
            for pid in left:
                fd = _pidfd(pid)
                if self._inside(pid):  # still the same process, now held by fd
                    _signal(pid, fd)
                if fd is not None:
                    os.close(fd)
            time.sleep(0.02)

    def close(self) -> None:
        for fd in (self.info_r, self.init_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


def _talk(proc, job: dict, limits: Limits, pipes: tuple[int, int, int, int], mode: str, kill,
          namespace: _Namespace | None, sandbox_uid: int | None = None) -> Outcome:
    """Send the job, then read the output and the result descriptor until the verdict, the end,
    or the deadline. ``pipes``: our ends (result, secret) and the numbers the child's ends have."""
    res_r, sec_w, res_child, sec_child = pipes
    start = time.monotonic()
    deadline = start + limits.timeout_s
    payload = dict(job, mode=mode, result_fd=res_child, secret_fd=sec_child, runner=RUNNER.read_text(),
                   limits={"timeout_s": limits.timeout_s, "memory_mb": limits.memory_mb,
                                                    "processes": limits.processes, "file_mb": limits.file_mb})
    try:
        proc.stdin.write(json.dumps(payload).encode())
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    out, err, res = bytearray(), bytearray(), bytearray()
    buffers = {proc.stdout.fileno(): out, proc.stderr.fileno(): err, res_r: res}
    if namespace is not None:
        buffers[namespace.info_r] = bytearray()
    sel = selectors.DefaultSelector()
    for fd in buffers:
        sel.register(fd, selectors.EVENT_READ)
    secret, verdict, state, timed_out, closed = None, None, "starting", False, False
    workers: list[int] = []
    try:
        while sel.get_map() and verdict is None and not closed:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=min(left, 0.5)):
                fd = key.fd
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(fd)
                    closed = closed or fd == res_r  # the supervisor is gone: no verdict can come
                    if namespace is not None and fd == namespace.info_r:
                        namespace.read_info(bytes(buffers[fd]))
                    continue
                buf = buffers[fd]
                buf += chunk
                if fd in (proc.stdout.fileno(), proc.stderr.fileno()) and len(buf) > 2 * KEEP_OUTPUT:
                    del buf[:-KEEP_OUTPUT]  # a flood of output is cut, not kept
                if namespace is not None and fd == namespace.info_r and b"}" in buf:
                    namespace.read_info(bytes(buf))
                if fd != res_r:
                    continue
                while b"\n" in res and verdict is None:
                    line, _, rest = bytes(res).partition(b"\n")
                    res[:] = rest
                    if state == "starting" and line == b"started":
                        state = "running"
                    elif state == "running" and line.startswith(b"worker ") and line[7:].isdigit():
                        workers.append(int(line[7:]))  # the worker's process group (unsafe mode kills it)
                    elif state == "running" and line == b"ready":
                        # everything but the supervisor is dead now; only then does a secret exist
                        secret = secrets.token_hex(16)
                        os.write(sec_w, secret.encode() + b"\n")
                        state = "judged"
                    elif state == "judged":
                        verdict = line.decode("utf-8", "replace")
                    else:
                        verdict = "failed: unexpected message on the result channel"
                if len(res) > 4096:
                    verdict = "failed: unexpected message on the result channel"
    finally:
        sel.close()
        kill()
        if namespace is None:
            for pgid in workers:
                _kill_group(pgid, sandbox_uid)
    seconds = time.monotonic() - start
    for fd in (proc.stdout.fileno(), proc.stderr.fileno()):  # what is left in the pipes after the kill
        buf = buffers[fd]
        try:
            while len(buf) < 2 * KEEP_OUTPUT and (chunk := _read_now(fd)):
                buf += chunk
        except OSError:
            pass
    proc.stdout.close()
    proc.stderr.close()
    if state == "starting" and not timed_out:
        proc.wait()
        raise SandboxError(f"the sandbox did not start (exit status {proc.returncode}): "
                           + (err.decode(errors="replace").strip().splitlines() or ["no message"])[-1][:300])
    detail = ""
    if timed_out and verdict is None:
        status = "timeout"
    elif verdict is not None and secret is not None and verdict == f"{secret} passed":
        status = "passed"
    else:
        status = "failed"
        if verdict is None:
            detail = "no verdict (the supervisor ended or was killed)"
        elif secret is not None and verdict.startswith(secret + " "):
            detail = verdict[len(secret) + 1:].removeprefix("failed").lstrip(": ")
        else:
            detail = verdict
    return Outcome(status, proc.returncode, out.decode(errors="replace")[-4000:],
                   err.decode(errors="replace")[-4000:], seconds, detail)


def _kill_group(pgid: int, uid: int, wait_s: float = 5.0) -> None:
    """SIGKILL a process group until it is gone (a forking group takes a moment to die), as long
    as it still has a live member of the sandbox's user: an empty group's number may be reused."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        members = [p for p in os.listdir("/proc") if p.isdigit() and (st := _stat(int(p)))
                   and st[2] == str(pgid) and st[0] not in "ZX" and _owner(p) == uid]
        if not members:
            return
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)


def _owner(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _read_now(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""
