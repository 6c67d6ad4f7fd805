"""An audit hook in the sandbox's worker process: an extra wall, not the one that holds.

The worker (sandbox_runner.py) runs this source before the untrusted program. The hook refuses
sockets, loading C libraries through ctypes, starting programs, forking, sending signals,
reaching the interpreter's objects through ``gc``, swapping a function's code, and writing,
renaming or deleting anything outside the working folder (including through ``dir_fd``, whose
target the hook cannot see). Audit hooks cannot be removed once added, but code in the same
interpreter can still reach past them (by patching the functions the hook calls, for one); the
sandbox is held by the operating system (sandbox.py), and this hook only turns common misuse
into a clear PermissionError.
"""
import os
import sys


def install(root=None):
    root = os.path.realpath(root or os.getcwd())
    blocked = ("socket.", "ctypes.", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
               "os.kill", "os.killpg", "signal.pthread_kill", "os.fork", "os.forkpty", "pty.", "gc.get_objects",
               "gc.get_referrers", "gc.get_referents", "sys.addaudithook", "os.setuid")
    no_imports = frozenset({"_posixsubprocess", "_ctypes", "ctypes"})
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    path_events = frozenset({"os.remove", "os.rmdir", "os.truncate", "os.chmod", "os.chown", "shutil.rmtree",
                             "os.mkdir", "os.utime", "os.chflags", "os.lchmod", "os.lchown", "os.mkfifo", "os.mknod"})
    dir_fd_last = frozenset({"os.remove", "os.rmdir", "os.chmod", "os.chown", "os.mkdir", "os.utime", "os.mkfifo",
                             "os.mknod", "shutil.rmtree"})
    pair_events = frozenset({"os.rename", "shutil.move", "os.link", "os.symlink", "os.replace"})
    realpath, fsdecode, sep = os.path.realpath, os.fsdecode, os.sep

    def inside(path):
        if isinstance(path, int):
            return True  # an open descriptor: already past the check when it was opened
        try:
            real = realpath(fsdecode(path))
        except (TypeError, ValueError):
            return False
        return real == root or real.startswith(root + sep)

    def hook(event, args):
        if event.startswith(blocked):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args and args[0] in no_imports:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "object.__setattr__" and len(args) > 1 and args[1] == "__code__":
            raise PermissionError(f"sandbox: replacing a function's {args[1]} is not allowed")
        if event == "open" and args[0] is not None and not isinstance(args[0], int):
            mode, flags = args[1] or "", args[2] or 0
            writing = any(c in str(mode) for c in "wax+") or flags & write_flags
            if writing and (not inside(args[0]) or (args[1] is None and not os.path.isabs(fsdecode(args[0])))):
                # os.open with a relative name may carry a dir_fd the event does not show
                raise PermissionError(f"sandbox: writing {args[0]!r} outside the working folder")
        elif event in path_events:
            dir_fd = args[-1] if event in dir_fd_last else None
            if not inside(args[0]) or dir_fd not in (None, -1):
                raise PermissionError(f"sandbox: {event} on {args[0]!r} outside the working folder")
        elif event in pair_events:
            dir_fds = [a for a in args[2:] if isinstance(a, int) and a != -1]
            if dir_fds or not all(inside(a) for a in args[:2]):
                raise PermissionError(f"sandbox: {event} outside the working folder")

    sys.addaudithook(hook)


install()
