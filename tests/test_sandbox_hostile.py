"""Hostile completions against the code sandbox: every one contained, no score forged.

Each probe is a wrong answer to ``add(a, b)`` (it returns ``a - b``) followed by an attack. Every
probe runs twice: behind the audit hook (as evaluation runs it) and without it, so the operating
system's walls are tested on their own. After each probe: it did not pass, it returned soon
after its timeout, canaries outside the sandbox are intact, nothing it read leaked into its
output, nothing it started is still running. Probes run in parallel threads.

Without bubblewrap (or user namespaces) these tests are skipped with the reason; ``make test``
installs bubblewrap with apt-get when it runs as root.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fidan.eval import sandbox
from fidan.eval.sandbox import Limits, run_tests
from fidan.eval.tasks.code import check

REASON = sandbox.unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no OS sandbox here: {REASON}")

ROOT = Path(__file__).resolve().parents[1]
PROMPT = 'def add(a, b):\n    """Return the sum of a and b."""\n'
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
WRONG = "    return a - b\n"
RIGHT = "    return a + b\n"
FAST = Limits(timeout_s=4, memory_mb=256, processes=32, file_mb=8, disk_mb=32)
SHORT = Limits(timeout_s=2, memory_mb=256, processes=32, file_mb=8, disk_mb=32)
MARKER = "fidanprobe" + secrets.token_hex(6)   # in the argv of everything a probe starts
TOKEN = "fidansecret" + secrets.token_hex(8)   # in files the sandbox must not read
SANDBOX_UID = 65534 if os.geteuid() == 0 else os.getuid()

# Starts a detached program without subprocess or os.fork: _posixsubprocess.fork_exec, loaded
# through _imp so that the audit hook's import check does not see it (the hook is not the wall).
SPAWN = '''
def _spawn(argv, setsid=True):
    import os
    try:
        import _imp, importlib.machinery as M
        P = _imp.create_builtin(M.ModuleSpec("_posixsubprocess", M.BuiltinImporter, origin="built-in"))
        args = [os.fsencode(a) for a in argv]
        r, w = os.pipe()
        try:
            pid = P.fork_exec(args, [args[0]], True, (), None, None, -1, -1, -1, -1, -1, -1, r, w, True, setsid,
                              -1, None, None, None, -1, None, False)
        except TypeError:
            try:
                pid = P.fork_exec(args, [args[0]], True, (), None, None, -1, -1, -1, -1, -1, -1, r, w, True,
                                  setsid, None, None, None, -1, None)
            except TypeError:  # another Python's signature: fork and exec by hand (no audit hook only)
                pid = os.fork()
                if pid == 0:
                    if setsid:
                        os.setsid()
                    os.execv(argv[0], argv)
        os.close(w)
        print("spawned", pid, flush=True)
        return pid
    except Exception as e:
        print("spawn refused", type(e).__name__, e, flush=True)
'''

DAEMON = '''import os, time, glob
end = time.time() + 25
while time.time() < end:
    for path in glob.glob("/tmp/fidan-sandbox-*/*") + glob.glob("/tmp/work/*") + ["@OUT@/canary.txt"]:
        try:
            open(path, "w").write("def add(a, b):\\n    return a + b\\n")
        except Exception:
            pass
    try:
        open("@OUT@/daemon-was-here", "w").write("x")
    except Exception:
        pass
    time.sleep(0.05)
# @MARKER@
'''


def _probes() -> dict[str, tuple[str, Limits, str]]:
    """name: (completion, limits, what else to check). All completions are wrong answers."""
    p: dict[str, tuple[str, Limits, str]] = {}

    def add(name, attack, limits=FAST, extra=""):
        p[name] = (WRONG + attack, limits, extra)

    # ---- forging the score
    add("exit0_at_load", "import os\nos._exit(0)\n")
    p["exit0_in_call"] = ("    import os\n    os._exit(0)\n", FAST, "")
    p["systemexit0_in_call"] = ("    raise SystemExit(0)\n", FAST, "")
    add("systemexit0_at_load", "raise SystemExit(0)\n")
    add("keyboardinterrupt", "raise KeyboardInterrupt\n")
    add("fake_pass_markers", "import sys\nfor s in ('passed', 'OK', 'PASS', 'started', 'ready', 'x passed'):\n"
        "    print(s)\n    print(s, file=sys.stderr)\n")
    add("write_result_fd", "import os\nfor fd in range(0, 256):\n    try:\n"
        "        os.write(fd, b'started\\nready\\n0 passed\\npassed\\n')\n    except OSError:\n        pass\n")
    add("proc_fd_of_supervisor",
        "import os\nfor pid in os.listdir('/proc'):\n    if not pid.isdigit():\n        continue\n"
        "    try:\n        fds = os.listdir('/proc/%s/fd' % pid)\n    except OSError as e:\n"
        "        print('fds', pid, type(e).__name__)\n        continue\n    for fd in fds:\n        try:\n"
        "            with open('/proc/%s/fd/%s' % (pid, fd), 'w') as f:\n"
        "                f.write('ready\\nx passed\\n')\n"
        "        except OSError:\n            pass\n")
    add("proc_mem_of_parent", "import os\ntry:\n    open('/proc/%d/mem' % os.getppid(), 'r+b')\n"
        "    print('MEM OPENED')\nexcept OSError as e:\n    print('mem', type(e).__name__)\n",
        extra="!MEM OPENED")
    add("patch_builtins", "import builtins\nbuiltins.AssertionError = type('N', (Exception,), {})\n"
        "builtins.isinstance = lambda *a: True\nbuiltins.print = lambda *a, **k: None\n")
    p["always_equal_object"] = ("    class Yes:\n        def __eq__(self, other):\n            return True\n"
                                "        __hash__ = object.__hash__\n    return Yes()\n", FAST, "")
    p["always_equal_int_subclass"] = ("    class Yes(int):\n        def __eq__(self, other):\n            return True\n"
                                      "        __hash__ = int.__hash__\n    return Yes(a - b)\n", FAST, "")
    add("patch_checker_via_frames",
        "import sys\nf = sys._getframe()\nwhile f is not None:\n"
        "    f.f_globals['check'] = lambda candidate: None\n    f.f_globals['candidate'] = lambda *a: 5\n"
        "    f = f.f_back\n")
    add("settrace_skip", "import sys\nsys.settrace(lambda *a: None)\n")
    add("atexit_exit0", "import atexit, os\natexit.register(lambda: os._exit(0))\n")
    add("thread_exit0", "import threading, os, time\n"
        "threading.Thread(target=lambda: (time.sleep(0.05), os._exit(0)), daemon=True).start()\ntime.sleep(0.3)\n")
    add("kill_parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n")
    add("stop_parent", "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\n", SHORT)
    add("kill_everyone", "import os, signal\nos.kill(-1, signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\n")
    add("kill_host_victim", "import os, signal\nfor sig in (signal.SIGKILL, signal.SIGSTOP):\n    try:\n"
        "        os.kill(@VICTIM@, sig)\n        print('signalled', sig)\n    except OSError as e:\n"
        "        print('kill', type(e).__name__)\n")
    add("ptrace_parent", "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "for pid in (os.getppid(), 1, @VICTIM@):\n    r = libc.ptrace(16, pid, 0, 0)\n"
        "    print('ptrace', pid, r, ctypes.get_errno())\n    if r == 0:\n        print('ATTACHED')\n",
        extra="!ATTACHED")
    p["deep_answer"] = ("    x = []\n    for _ in range(200000):\n        x = [x]\n    return x\n", FAST, "")
    p["huge_answer"] = ("    return 'x' * (40 * 1024 * 1024)\n", FAST, "")

    # ---- outliving the run
    add("fork_exec_daemon", SPAWN + "_spawn(['/usr/bin/python3', '-c', @DAEMON@])\n", extra="daemon")
    add("setsid_child_outlives_timeout",
        SPAWN + "_spawn(['/usr/bin/python3', '-c', 'import time; time.sleep(60) # @MARKER@'])\nwhile True:\n    pass\n",
        SHORT, extra="timeout")
    add("double_fork_setsid",
        "import os, time\ntry:\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
        "            os.execv('/usr/bin/python3', ['/usr/bin/python3', '-c', @DAEMON@])\n        os._exit(0)\n"
        "    time.sleep(0.2)\nexcept Exception as e:\n    print('fork', type(e).__name__)\n")
    add("sleep_ignoring_signals", "import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
        "    signal.signal(s, signal.SIG_IGN)\ntime.sleep(60)\n", SHORT, extra="timeout")

    # ---- getting past the audit hook
    add("dir_fd_write_outside", "import os\ntry:\n    d = os.open('@OUT@', os.O_RDONLY)\n"
        "    fd = os.open('canary.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=d)\n    os.write(fd, b'gone')\n"
        "    print('WROTE')\nexcept OSError as e:\n    print('dir_fd', type(e).__name__)\n", extra="!WROTE")
    add("dir_fd_delete_outside", "import os\ntry:\n    d = os.open('@OUT@', os.O_RDONLY)\n"
        "    os.remove('canary.txt', dir_fd=d)\n    print('DELETED')\nexcept OSError as e:\n"
        "    print('dir_fd', type(e).__name__)\n", extra="!DELETED")
    add("hook_off_via_frames_then_write",
        "import sys\nf = sys._getframe()\nwhile f is not None:\n    for k in list(f.f_globals):\n"
        "        if k in ('ROOT', 'BLOCKED', 'root', 'blocked'):\n            f.f_globals[k] = '/'\n    f = f.f_back\n"
        "try:\n    open('@OUT@/canary.txt', 'w').write('gone')\n    print('WROTE')\nexcept OSError as e:\n"
        "    print('write', type(e).__name__)\n", extra="!WROTE")
    add("hook_off_via_gc_then_write",
        "import gc\ntry:\n    for o in gc.get_objects():\n        if isinstance(o, dict) and 'ROOT' in o:\n"
        "            o['ROOT'] = '/'\nexcept Exception as e:\n    print('gc', type(e).__name__)\n"
        "import posixpath\nposixpath.abspath = lambda p: '/tmp/work/x'\n"
        "try:\n    open('@OUT@/canary.txt', 'w').write('gone')\n    print('WROTE')\nexcept OSError as e:\n"
        "    print('write', type(e).__name__)\n", extra="!WROTE")

    # ---- reading what is not its own
    reads = {"read_project_source": "@PROJECT@/src/fidan/eval/sandbox.py",
             "read_run_data": "@OUT@/runs/demo/data/train.txt",
             "read_etc_shadow": "/etc/shadow",
             "read_home_bashrc": "@HOME@/.bashrc",
             "read_host_environ": "/proc/1/environ"}
    for name, path in reads.items():
        add(name, "import os, glob\nfor path in ['" + path + "'] + glob.glob('/proc/*/environ'):\n    try:\n"
            "        print('READ', path, open(path, 'rb').read()[:4000])\n    except OSError as e:\n"
            "        print('read', path, type(e).__name__)\n", extra="!READ " + path)
    add("list_host_processes", "import os\nfor pid in os.listdir('/proc'):\n    try:\n"
        "        print(pid, open('/proc/%s/cmdline' % pid, 'rb').read())\n    except OSError:\n        pass\n",
        extra="!pytest")
    add("proc_root_escape", "import os\nfor base in ('/proc/1/root', '/proc/self/root', '/proc/1/cwd'):\n    try:\n"
        "        print(base, os.listdir(base + '@PROJECT@'))\n    except OSError as e:\n"
        "        print(base, type(e).__name__)\n", extra="!sandbox.py")

    # ---- writing and deleting outside
    add("write_outside", "try:\n    open('@OUT@/canary.txt', 'w').write('gone')\n    print('WROTE')\n"
        "except OSError as e:\n    print(type(e).__name__)\n", extra="!WROTE")
    add("delete_outside", "import os, shutil\nfor f in (lambda: os.remove('@OUT@/canary.txt'),"
        " lambda: shutil.rmtree('@OUT@'), lambda: os.rename('@OUT@/canary.txt', '/tmp/x')):\n    try:\n"
        "        f()\n        print('DELETED')\n    except OSError as e:\n        print(type(e).__name__)\n",
        extra="!DELETED")
    add("append_bashrc", "import os\nfor path in ('@HOME@/.bashrc', os.path.expanduser('~/.bashrc')):\n    try:\n"
        "        open(path, 'a').write('\\n# @MARKER@\\n')\n        print('appended', path)\n    except OSError as e:\n"
        "        print(path, type(e).__name__)\n")
    add("symlink_outside", "import os\ntry:\n    os.symlink('@OUT@/canary.txt', 'link')\n"
        "    open('link', 'w').write('gone')\n    print('WROTE')\nexcept OSError as e:\n    print(type(e).__name__)\n",
        extra="!WROTE")
    add("hardlink_outside", "import os\ntry:\n    os.link('@OUT@/canary.txt', 'hard')\n"
        "    open('hard', 'w').write('gone')\n    print('WROTE')\nexcept OSError as e:\n    print(type(e).__name__)\n",
        extra="!WROTE")
    add("write_runtime", "import os\nfor path in ('/usr/lib/python3/@MARKER@.py', '/usr/bin/@MARKER@', "
        "'/bin/@MARKER@', '/dev/@MARKER@', '/@MARKER@'):\n    try:\n        open(path, 'w').write('x')\n"
        "        print('WROTE', path)\n    except OSError as e:\n        print(path, type(e).__name__)\n",
        extra="!WROTE")
    add("sysrq_and_sysctl", "for path in ('/proc/sysrq-trigger', '/proc/sys/kernel/hostname', "
        "'/proc/sys/vm/drop_caches'):\n    try:\n        open(path, 'w').close()\n        print('OPENED', path)\n"
        "    except OSError as e:\n        print(path, type(e).__name__)\n", extra="!OPENED")

    # ---- network and the host's sockets
    add("tcp_to_localhost", "import socket\ntry:\n    socket.create_connection(('127.0.0.1', @PORT@), timeout=1)\n"
        "    print('CONNECTED')\nexcept Exception as e:\n    print(type(e).__name__)\n", extra="!CONNECTED")
    add("tcp_via_builtin_socket", "import _imp, importlib.machinery as M\ntry:\n"
        "    S = _imp.create_builtin(M.ModuleSpec('_socket', M.BuiltinImporter, origin='built-in'))\n"
        "    s = S.socket(S.AF_INET, S.SOCK_STREAM)\n    s.settimeout(1)\n    s.connect(('127.0.0.1', @PORT@))\n"
        "    print('CONNECTED')\nexcept Exception as e:\n    print(type(e).__name__, e)\n", extra="!CONNECTED")
    add("udp_to_localhost", "import _imp, importlib.machinery as M\ntry:\n"
        "    S = _imp.create_builtin(M.ModuleSpec('_socket', M.BuiltinImporter, origin='built-in'))\n"
        "    s = S.socket(S.AF_INET, S.SOCK_DGRAM)\n    s.sendto(b'@MARKER@', ('127.0.0.1', @UPORT@))\n"
        "    print('sent')\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    add("abstract_unix_socket", "import _imp, importlib.machinery as M\ntry:\n"
        "    S = _imp.create_builtin(M.ModuleSpec('_socket', M.BuiltinImporter, origin='built-in'))\n"
        "    s = S.socket(S.AF_UNIX, S.SOCK_STREAM)\n    s.connect('\\0@UNIX@')\n    print('CONNECTED')\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n", extra="!CONNECTED")
    add("new_namespaces_and_setuid", "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "for flag in (0x10000000, 0x20000000, 0x40000000):\n    print('unshare', flag, libc.unshare(flag))\n"
        "try:\n    os.setuid(0)\n    print('ROOT')\nexcept OSError as e:\n    print('setuid', type(e).__name__)\n",
        extra="!ROOT")

    # ---- resources
    add("fill_disk", "import os, errno\nn = 0\n"
        "for d in ('/tmp', '/tmp/work', '/dev/shm', '/dev', '/', '/usr', '@OUT@'):\n"
        "    for i in range(100):\n        try:\n            with open('%s/fill%d' % (d, i), 'wb', buffering=0) as f:\n"
        "                while True:\n                    f.write(b'x' * 1048576)\n                    n += 1\n"
        "        except OSError as e:\n            if e.errno != errno.EFBIG:  # file size limit: next file\n"
        "                break\nprint('MB', n)\n", extra="disk")
    add("fork_bomb", "import os\nn = 0\ntry:\n    while True:\n        os.fork()\n        n += 1\n"
        "except Exception as e:\n    print('fork', n, type(e).__name__)\n", SHORT)
    add("fork_exec_bomb", SPAWN + "while True:\n    if _spawn(['/usr/bin/sleep', '30']) is None:\n        break\n",
        SHORT)
    add("memory_hog", "try:\n    x = bytearray(2 * 1024 ** 3)\n    print('ALLOCATED')\nexcept MemoryError:\n"
        "    print('MemoryError')\n", extra="!ALLOCATED")
    add("memory_hog_many_processes", SPAWN + "for _ in range(12):\n"
        "    _spawn(['/usr/bin/python3', '-c', 'import time\\nx = b\"x\" * 150000000\\ntime.sleep(30) # @MARKER@'])\n"
        "import time\ntime.sleep(30)\n", extra="memory")
    add("infinite_loop_at_load", "while True:\n    pass\n", SHORT, extra="timeout")
    p["infinite_loop_in_call"] = ("    while True:\n        pass\n", SHORT, "timeout")
    add("output_flood", "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", SHORT, extra="timeout")
    add("threads_spinning", "import threading\nfor _ in range(8):\n"
        "    threading.Thread(target=lambda: sum(iter(int, 1))).start()\n", SHORT)
    return p


PROBES = _probes()


@pytest.fixture(scope="module")
def world():
    """Canaries outside the sandbox, listening sockets, a victim process; then every probe, run."""
    out = Path(tempfile.mkdtemp(prefix="fidan-hostile-"))
    out.chmod(0o777)  # world-writable: only the sandbox's walls keep the probes out
    canary = out / "canary.txt"
    canary.write_text(TOKEN)
    canary.chmod(0o666)
    data = out / "runs" / "demo" / "data" / "train.txt"
    data.parent.mkdir(parents=True)
    data.write_text(f"training text {TOKEN}\n")
    data.chmod(0o644)
    home = Path.home()
    bashrc = home / ".bashrc"
    watched = [canary, data, bashrc, ROOT / "src" / "fidan" / "eval" / "sandbox.py", Path("/etc/shadow"),
               Path(os.path.realpath("/usr/bin/python3"))]
    before = {p: _digest(p) for p in watched}
    os.environ["FIDAN_HOSTILE_TOKEN"] = TOKEN  # the host's environment must not be readable
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    tcp.settimeout(0.2)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    unix_name = "fidan-hostile-" + secrets.token_hex(4)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("\0" + unix_name)
    unix.listen(8)
    unix.settimeout(0.2)
    arrived: list = []
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            for s in (tcp, unix):
                try:
                    arrived.append(s.accept())
                except (TimeoutError, OSError):
                    pass
            try:
                arrived.append(udp.recvfrom(4096))
            except (TimeoutError, OSError):
                pass
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    victim = subprocess.Popen(["sleep", "300"], **({"user": SANDBOX_UID} if os.geteuid() == 0 else {}))
    foreign_before = _foreign_processes()
    values = {"@OUT@": str(out), "@PORT@": str(tcp.getsockname()[1]), "@UPORT@": str(udp.getsockname()[1]),
              "@UNIX@": unix_name, "@VICTIM@": str(victim.pid), "@PROJECT@": str(ROOT), "@HOME@": str(home),
              "@MARKER@": MARKER}
    values["@DAEMON@"] = repr(_fill(DAEMON, values))

    def run(job):
        name, hook = job
        completion, limits, _ = PROBES[name]
        t0 = time.monotonic()
        try:
            outcome = run_tests(PROMPT, _fill(completion, values), TEST, "add", limits, audit_hook=hook)
        except Exception as e:  # noqa: BLE001 - a sandbox failure fails this probe's test, not all of them
            outcome = e
        return job, outcome, time.monotonic() - t0

    jobs = [(name, hook) for name in PROBES for hook in (True, False)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = {job: (outcome, seconds) for job, outcome, seconds in pool.map(run, jobs)}
    time.sleep(0.3)
    stop.set()
    listener.join()
    state = {"results": results, "out": out, "before": before, "after": {p: _digest(p) for p in watched},
             "arrived": arrived, "victim_alive": victim.poll() is None, "victim_state": _proc_state(victim.pid),
             "foreign_before": foreign_before, "values": values}
    yield state
    victim.kill()
    victim.wait()
    for s in (tcp, udp, unix):
        s.close()
    os.environ.pop("FIDAN_HOSTILE_TOKEN", None)
    if bashrc.exists() and MARKER in bashrc.read_text(errors="replace"):  # only if the sandbox failed
        bashrc.write_text("".join(line for line in bashrc.read_text().splitlines(True) if MARKER not in line))
    shutil.rmtree(out, ignore_errors=True)


def _fill(text: str, values: dict) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None
    except OSError as e:
        return type(e).__name__


def _proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _marked_processes() -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if MARKER.encode() in cmd and int(pid) != os.getpid():
                found.append(f"{pid}: {cmd[:80]!r}")
    return found


def _foreign_processes() -> set[int]:
    """Live processes of the sandbox's host user in a PID namespace other than ours."""
    mine = os.readlink("/proc/self/ns/pid")
    found = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == SANDBOX_UID and os.readlink(f"/proc/{pid}/ns/pid") != mine \
                        and _proc_state(int(pid)) not in "ZX":
                    found.add(int(pid))
            except OSError:
                pass
    return found


def _text(outcome) -> str:
    return outcome.stdout + outcome.stderr + outcome.detail


def test_there_are_at_least_40_probes():
    assert len(PROBES) >= 40


@pytest.mark.parametrize("hook", [True, False], ids=["with-audit-hook", "os-walls-only"])
@pytest.mark.parametrize("name", sorted(PROBES))
def test_probe_is_contained(world, name, hook):
    outcome, seconds = world["results"][(name, hook)]
    if isinstance(outcome, Exception):
        raise outcome
    _, limits, extra = PROBES[name]
    extra = _fill(extra, world["values"])
    text = _text(outcome)
    assert not outcome.passed, f"{name} forged a pass: {text[-500:]}"
    assert outcome.status in ("failed", "timeout")
    assert seconds < limits.timeout_s + 5, f"{name} took {seconds:.1f}s"
    assert TOKEN not in text, f"{name} read a secret: {text[-500:]}"
    assert "root:" not in text and "$6$" not in text and "$y$" not in text
    assert "class _Namespace" not in text and "FIDAN_HOSTILE_TOKEN" not in text
    assert len(outcome.stdout) <= 4000 and len(outcome.stderr) <= 4000
    for item in extra.split(","):
        if item.startswith("!"):
            assert item[1:] not in text, f"{name}: {text[-500:]}"
        elif item == "timeout":
            assert outcome.status == "timeout"
        elif item == "disk" and not hook:  # without the hook the writes go ahead until the walls stop them
            mb = int(text.split("MB ", 1)[1].split()[0])
            assert 0 < mb <= FAST.disk_mb + 16 + 8, text[-300:]
        elif item == "memory":  # stopped by the supervisor's watch on the whole sandbox, not the timeout
            assert "more than" in outcome.detail and seconds < limits.timeout_s, text[-300:]
        elif item == "daemon" and not hook:  # the daemon really started: the probe has teeth
            assert "spawned" in outcome.stdout, text[-300:]


def test_canaries_outside_are_intact(world):
    assert world["before"] == world["after"]
    out = world["out"]
    assert (out / "canary.txt").read_text() == TOKEN
    assert sorted(p.name for p in out.iterdir()) == ["canary.txt", "runs"]  # no daemon marks, no fill files
    assert not Path("/tmp/x").exists() or Path("/tmp/x").read_text(errors="replace") != TOKEN


def test_no_connection_reached_the_host(world):
    assert world["arrived"] == []


def test_host_processes_were_not_touched(world):
    assert world["victim_alive"] and world["victim_state"] not in ("T", "t", "Z")


def test_nothing_the_probes_started_survives(world):
    assert _marked_processes() == []
    assert _foreign_processes() - world["foreign_before"] == set()


def test_a_daemon_cannot_make_later_wrong_answers_pass(world):
    """A detached daemon from one run, then five wrong answers: none passes, nothing survives."""
    completion = _fill(PROBES["fork_exec_daemon"][0], world["values"])
    first = run_tests(PROMPT, completion, TEST, "add", FAST, audit_hook=False)
    assert not first.passed and "spawned" in first.stdout
    assert _marked_processes() == []
    for _ in range(5):
        assert not run_tests(PROMPT, WRONG, TEST, "add", FAST).passed
    assert run_tests(PROMPT, RIGHT, TEST, "add", FAST).passed
    assert not (world["out"] / "daemon-was-here").exists()


def test_sandboxes_do_not_share_their_folder():
    """A canary inside one sandbox's /tmp survives daemons rewriting /tmp in others."""
    keeper = (RIGHT + "import time\nopen('/tmp/work/keep.txt', 'w').write('mine')\ntime.sleep(1.5)\n"
              "assert open('/tmp/work/keep.txt').read() == 'mine'\n")
    attacker = (WRONG + SPAWN + "_spawn(['/usr/bin/python3', '-c', 'import glob, time\\nend = time.time() + 3\\n"
                "while time.time() < end:\\n    for p in glob.glob(\"/tmp/*\") + glob.glob(\"/tmp/work/*\"):\\n"
                "        try:\\n            open(p, \"w\").write(\"theirs\")\\n        except Exception:\\n"
                "            pass\\n# " + MARKER + "'])\nimport time\ntime.sleep(2)\n")
    with ThreadPoolExecutor(max_workers=2) as pool:
        attack = pool.submit(run_tests, PROMPT, attacker, TEST, "add", FAST, False, False)
        time.sleep(0.2)
        keep = pool.submit(run_tests, PROMPT, keeper, TEST, "add", FAST)
        assert keep.result().passed, _text(keep.result())[-300:]
        assert not attack.result().passed


def test_the_score_comes_from_the_supervisor_not_the_exit_status():
    right = run_tests(PROMPT, RIGHT, TEST, "add", FAST)
    assert right.passed and right.isolated
    wrong = run_tests(PROMPT, WRONG, TEST, "add", FAST)
    assert wrong.status == "failed" and "AssertionError" in wrong.detail
    # a right answer whose program then exits 0 at once still passes only through check()
    assert not run_tests(PROMPT, WRONG + "import os\nos._exit(0)\n", TEST, "add", FAST).passed


def test_humaneval_style_check_uses_the_sandbox():
    problem = {"task_id": "t", "prompt": PROMPT, "test": TEST, "entry_point": "add"}
    assert check(problem, RIGHT, FAST).passed
    assert not check(problem, WRONG + "raise SystemExit(0)\n", FAST).passed
