"""The sandbox contains hostile code, and HumanEval's own solutions pass through it."""
import os
import socket
import threading

import pytest

from conftest import shared_file
from fidan.eval.sandbox import Limits, run_python
from fidan.eval.tasks.code import check, evaluate, load_humaneval, pass_at_k

FAST = Limits(timeout_s=3, memory_mb=256, processes=32)


def test_ordinary_code_passes_and_failure_fails():
    assert run_python("print(sum(range(10)))", FAST).stdout.strip() == "45"
    out = run_python("assert 1 + 1 == 3", FAST)
    assert out.status == "failed" and "AssertionError" in out.stderr


def test_infinite_loop_is_stopped():
    out = run_python("while True:\n    pass\n", Limits(timeout_s=1.5))
    assert out.status == "timeout" and out.seconds < 5


def test_fork_bomb_is_contained():
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    out = run_python(code, Limits(timeout_s=2, processes=16))
    assert not out.passed
    # nothing it forked survives the run
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).endswith("program.py")]
    assert leftovers == []


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\x00", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def test_memory_hog_is_refused():
    out = run_python("x = bytearray(2 * 1024 ** 3)\nprint('allocated')", FAST)
    assert not out.passed and "allocated" not in out.stdout and "MemoryError" in out.stderr


def test_files_outside_the_working_folder_are_safe(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep")
    code = (f"import os, shutil\n"
            f"for attempt in (lambda: os.remove({str(victim)!r}), lambda: open({str(victim)!r}, 'w').write('x'),\n"
            f"                lambda: shutil.rmtree({str(tmp_path)!r})):\n"
            f"    try:\n        attempt()\n    except Exception as e:\n        print(type(e).__name__)\n"
            f"open('inside.txt', 'w').write('fine')\nprint('inside ok')\n")
    out = run_python(code, FAST)
    assert victim.read_text() == "keep"
    assert out.stdout.count("PermissionError") == 3 and "inside ok" in out.stdout


def test_network_is_unreachable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    code = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            f"    print('connected')\nexcept Exception as e:\n    print('blocked', type(e).__name__)\n")
    out = run_python(code, FAST)
    server.close()
    assert "blocked" in out.stdout and not accepted


def test_pass_at_k_estimator():
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - (3 * 2) / (5 * 4))


@pytest.mark.slow
def test_humaneval_canonical_solutions_all_pass_and_wrong_ones_fail():
    problems = load_humaneval(shared_file("HumanEval.jsonl.gz"))
    assert len(problems) == 164
    result = evaluate(problems, [[p["canonical_solution"]] for p in problems])
    failed = [r["task_id"] for r in result["problems"] if not r["passed"]]
    assert failed == [] and result["pass@1"] == 1.0
    wrong = evaluate(problems[:10], [["    return None\n"] for _ in range(10)])
    assert wrong["pass@1"] == 0.0
    assert not check(problems[0], "    while True: pass\n").passed
