"""Runs untrusted Python inside the sandbox's process, behind an audit hook.

The hook is a second wall behind the operating-system limits (see sandbox.py): it refuses
sockets, loading C libraries through ctypes, starting programs, forking, sending signals, and
writing, renaming or deleting anything outside the working folder. Audit hooks cannot be removed once added.
Usage: python -I guard.py program.py
"""
import os
import runpy
import sys

ROOT = os.path.realpath(os.getcwd())
BLOCKED = ("socket.", "ctypes.", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
           "os.kill", "os.killpg", "signal.pthread_kill", "os.fork")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _inside(path) -> bool:
    try:
        real = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return real == ROOT or real.startswith(ROOT + os.sep)


def _hook(event, args):
    if event.startswith(BLOCKED):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open" and args[0] is not None and not isinstance(args[0], int):
        mode, flags = args[1] or "", args[2] or 0
        writing = any(c in str(mode) for c in "wax+") or flags & WRITE_FLAGS
        if writing and not _inside(args[0]):
            raise PermissionError(f"sandbox: writing {args[0]!r} outside the working folder")
    elif event in ("os.remove", "os.rmdir", "os.truncate", "os.chmod", "os.chown", "shutil.rmtree", "os.mkdir"):
        if not isinstance(args[0], int) and not _inside(args[0]):
            raise PermissionError(f"sandbox: {event} on {args[0]!r} outside the working folder")
    elif event in ("os.rename", "shutil.move", "os.link", "os.symlink"):
        if not all(_inside(a) for a in args[:2] if not isinstance(a, int)):
            raise PermissionError(f"sandbox: {event} outside the working folder")


sys.addaudithook(_hook)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
