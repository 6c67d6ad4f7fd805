"""The code that runs inside the sandbox: a supervisor that judges and a worker that obeys.

This file is not imported by fidan; sandbox.py sends its source into the sandbox and runs it
with the interpreter there (standard library only, any Python 3.8 or later):

    python -I -S -B -c SOURCE supervisor      the job arrives as JSON on stdin

The **worker** is a separate process started by the supervisor. It installs the audit hook
(sandbox_guard.py), runs the prompt and the completion (the only untrusted code), then answers
calls: each request is the arguments for the entry point, each answer the value it returned,
both as plain data (numbers, strings, lists, tuples, dicts, sets, bytes, None). It never sees
the tests, the result descriptor or the secret.

The **supervisor** never runs a line of the completion. It runs the prompt (trusted: it comes
from the benchmark) for its helper functions and then the problem's tests, with ``candidate``
standing for a stub that forwards each call to the worker and decodes the answer into fresh
built-in objects. The verdict is "passed" only when ``check(candidate)`` returns in the
supervisor's own interpreter. Then it kills every other process in the sandbox (the PID
namespace: ``kill(-1)`` reaches exactly them), says "ready" on the result descriptor, receives
the per-run secret and writes ``SECRET verdict``. See sandbox.py for why this cannot be forged.
"""
import json
import os
import signal
import subprocess
import sys
import time

MAX_MESSAGE = 32 * 1024 * 1024


# ---------------------------------------------------------------- plain data, both directions
def encode(x, depth=0):
    if depth > 200:
        raise ValueError("value nested too deeply")
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return {"i": str(x)}  # no digit limit, no float confusion
    if t is float:
        return {"f": repr(x)}
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, int):
        return {"i": str(int(x))}
    if isinstance(x, float):
        return {"f": repr(float(x))}
    if isinstance(x, str):
        return {"u": str.__str__(x)}
    if isinstance(x, complex):
        return {"c": [repr(x.real), repr(x.imag)]}
    if isinstance(x, (bytes, bytearray)):
        return {"y": bytes(x).decode("latin-1"), "m": isinstance(x, bytearray)}
    if isinstance(x, tuple):
        return {"t": [encode(v, depth + 1) for v in x]}
    if isinstance(x, list):
        return {"l": [encode(v, depth + 1) for v in x]}
    if isinstance(x, dict):
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in x.items()]}
    if isinstance(x, frozenset):
        return {"z": [encode(v, depth + 1) for v in x]}
    if isinstance(x, set):
        return {"s": [encode(v, depth + 1) for v in x]}
    if isinstance(x, range):
        return {"r": [x.start, x.stop, x.step]}
    raise TypeError(f"a {type(x).__name__} cannot leave the sandbox (plain data only)")


def decode(x):
    """Turn a message back into fresh built-in objects; anything unexpected is an error."""
    if x is None or type(x) in (bool, str):
        return x
    if type(x) is not dict or len(x) not in (1, 2):
        raise ValueError("malformed value")
    (tag, v), = [(k, x[k]) for k in x if k != "m"] or [("?", None)]
    if tag == "i" and type(v) is str:
        return int(v)
    if tag == "f" and type(v) is str:
        return float(v)
    if tag == "u" and type(v) is str:
        return str(v)
    if tag == "c" and type(v) is list and len(v) == 2:
        return complex(float(v[0]), float(v[1]))
    if tag == "y" and type(v) is str:
        b = v.encode("latin-1")
        return bytearray(b) if x.get("m") is True else b
    if tag == "r" and type(v) is list and len(v) == 3 and all(type(n) is int for n in v):
        return range(*v)
    if type(v) is not list:
        raise ValueError("malformed value")
    if tag == "t":
        return tuple(decode(e) for e in v)
    if tag == "l":
        return [decode(e) for e in v]
    if tag == "s":
        return set(decode(e) for e in v)
    if tag == "z":
        return frozenset(decode(e) for e in v)
    if tag == "d":
        out = {}
        for pair in v:
            if type(pair) is not list or len(pair) != 2:
                raise ValueError("malformed value")
            out[decode(pair[0])] = decode(pair[1])
        return out
    raise ValueError("malformed value")


def read_message(f):
    line = f.readline(MAX_MESSAGE + 1)
    if not line:
        raise EOFError("the worker closed its answers (it ended or was killed)")
    if len(line) > MAX_MESSAGE or not line.endswith(b"\n"):
        raise ValueError("the worker's answer is too long")
    return json.loads(line)


def write_message(f, obj):
    sys.stdout.flush()  # the worker's prints reach the log before it can be killed
    sys.stderr.flush()
    f.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
    f.flush()


# ---------------------------------------------------------------- the worker (untrusted once it runs the code)
def worker(answers_fd):
    answers = os.fdopen(answers_fd, "wb", buffering=0)
    requests = sys.stdin.buffer
    job = read_message(requests)
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(job["guard"], "sandbox_guard.py", "exec"), ns)  # installs the audit hook, adds nothing else
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    import linecache
    source = job["source"]
    linecache.cache["program.py"] = (len(source), None, source.splitlines(True), "program.py")
    try:
        exec(compile(source, "program.py", "exec"), ns)
    except BaseException as e:  # noqa: BLE001 - the program's own failure, reported as data
        import traceback
        traceback.print_exc()
        write_message(answers, {"loaded": False, "error": f"{type(e).__name__}: {e}"})
        return
    write_message(answers, {"loaded": True})
    entry = job.get("entry")
    while True:
        try:
            request = read_message(requests)
        except EOFError:
            return
        try:
            fn = ns[entry]
            value = fn(*decode(request["args"]), **decode(request["kwargs"]))
            answer = {"value": encode(value)}
        except BaseException as e:  # noqa: BLE001
            answer = {"raise": type(e).__name__, "message": str(e)[:2000]}
        write_message(answers, answer)


# ---------------------------------------------------------------- the supervisor (trusted)
class CandidateFailed(Exception):
    """The candidate raised (in the worker) or its answer could not be read."""


def _non_dumpable():
    """No other process of this user may read our memory or open our descriptors via /proc."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
    except Exception:  # noqa: BLE001 - the namespace and separate worker still hold
        pass


def _limit(limits):
    import resource
    cpu = int(limits["timeout_s"]) + 1
    for name, value in (("RLIMIT_CPU", cpu), ("RLIMIT_AS", limits["memory_mb"] * 1024 * 1024),
                        ("RLIMIT_FSIZE", limits["file_mb"] * 1024 * 1024), ("RLIMIT_CORE", 0),
                        ("RLIMIT_NPROC", limits["processes"])):
        resource.setrlimit(getattr(resource, name), (value, value))


def _others():
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]


def _watch_memory(limit_bytes, state):
    """Namespace mode: the resident memory of all the sandbox's processes together stays under the
    limit (the address-space limit holds for each process alone); over it, all of them are killed."""
    page = os.sysconf("SC_PAGE_SIZE")
    while True:
        total = 0
        for pid in _others():
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * page
            except (OSError, ValueError, IndexError):
                pass
        if total > limit_bytes:
            state["memory"] = total
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)


def _kill_everyone_else(mode, worker_proc):
    """Namespace mode: every process but us, the namespace's init (kill -1 in our PID namespace)."""
    if mode == "namespace" and os.getpid() == 1:  # bwrap --as-pid-1: we are init of a fresh namespace
        for _ in range(200):
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                pass
            if not _others():
                return True
            time.sleep(0.01)
        return False
    try:
        os.killpg(worker_proc.pid, signal.SIGKILL)  # unsafe mode: the worker's group only
    except (ProcessLookupError, PermissionError):
        pass
    worker_proc.wait()
    return True


def supervisor():
    job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    result_fd, secret_fd = job["result_fd"], job["secret_fd"]
    for fd in range(3, 1024):  # bwrap's info descriptor and anything else inherited
        if fd not in (result_fd, secret_fd):
            try:
                os.close(fd)
            except OSError:
                pass
    result = os.fdopen(result_fd, "wb", buffering=0)
    result.write(b"started\n")
    _non_dumpable()
    if job["mode"] == "namespace":
        _limit(job["limits"])
    job["result"] = result
    verdict = _judge(job)
    result.write(b"ready\n")
    with os.fdopen(secret_fd, "rb") as f:
        secret = f.readline(200).strip().decode("ascii", "replace")
    line = "{} {}\n".format(secret, verdict.replace("\n", " ")[:500])
    sys.stdout.flush()
    sys.stderr.flush()
    result.write(line.encode("utf-8", "replace"))
    result.close()
    os._exit(0)


def _judge(job):
    watch = {}
    if job["mode"] == "namespace" and os.getpid() == 1:
        import threading
        threading.Thread(target=_watch_memory, args=(job["limits"]["memory_mb"] * 1024 * 1024, watch),
                         daemon=True).start()
    req_r, req_w = os.pipe()
    ans_r, ans_w = os.pipe()
    worker_proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-B", "-c", job["runner"], "worker", str(ans_w)],
        stdin=req_r, pass_fds=(ans_w,), close_fds=True, start_new_session=job["mode"] != "namespace")
    os.close(req_r)
    os.close(ans_w)
    job["result"].write(b"worker %d\n" % worker_proc.pid)  # unsafe mode: fidan kills its group at the end
    requests = os.fdopen(req_w, "wb", buffering=0)
    answers = os.fdopen(ans_r, "rb")
    try:
        verdict = _run_tests(job, requests, answers)
    except BaseException as e:  # noqa: BLE001 - whatever happened, it is not a pass
        verdict = f"failed {type(e).__name__}: {e}"
    for f in (requests, answers):
        try:
            f.close()
        except OSError:
            pass
    if not _kill_everyone_else(job["mode"], worker_proc):
        verdict = "failed: processes in the sandbox would not die"
    if "memory" in watch:
        verdict = f"failed: the sandbox's processes used more than {job['limits']['memory_mb']} MB together"
    return verdict


def _run_tests(job, requests, answers):
    write_message(requests, {"guard": job["guard"], "source": job["source"], "entry": job["entry_point"]})
    loaded = read_message(answers)
    if type(loaded) is not dict or loaded.get("loaded") is not True:
        error = str(loaded.get("error") if type(loaded) is dict else "")[:300]
        return f"failed: the program did not run ({error})"
    if not job["test"]:
        return "passed"  # a plain program (run_python): it ran to its end, by the worker's own account
    import builtins

    def candidate(*args, **kwargs):
        write_message(requests, {"args": encode(list(args)), "kwargs": encode(dict(kwargs))})
        answer = read_message(answers)
        if type(answer) is not dict:
            raise CandidateFailed("malformed answer")
        if "value" in answer:
            return decode(answer["value"])
        name, message = str(answer.get("raise")), str(answer.get("message"))
        kind = getattr(builtins, name, None)
        if isinstance(kind, type) and issubclass(kind, Exception) and kind.__module__ == "builtins":
            try:
                error = kind(message)
            except Exception:  # noqa: BLE001 - exception types with other signatures
                error = CandidateFailed(f"{name}: {message}")
            raise error
        raise CandidateFailed(f"{name}: {message}")

    ns = {"__name__": "__check__", "__builtins__": builtins}
    for prompt in (job["prompt"], job["prompt"] + "    pass\n", ""):
        try:
            exec(compile(prompt, "prompt.py", "exec"), ns)  # the benchmark's own helpers
            break
        except Exception:  # noqa: BLE001 - a prompt that needs its body; try the next form
            ns = {"__name__": "__check__", "__builtins__": builtins}
    ns[job["entry_point"]] = candidate
    exec(compile(job["test"], "test.py", "exec"), ns)
    ns["check"](candidate)
    return "passed"


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(int(sys.argv[2]))
    elif sys.argv[1:2] == ["supervisor"]:
        supervisor()
