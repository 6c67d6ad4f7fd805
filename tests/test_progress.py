"""Progress off a terminal: a log line every N seconds with rate and ETA, and a closing line."""
import io

from fidan.progress import Progress, duration


def test_off_a_terminal_progress_is_a_log_line_every_n_seconds():
    now = [0.0]
    out = io.StringIO()
    bar = Progress(total=400, desc="judge sampling", unit="answers", stream=out, every=30, clock=lambda: now[0])
    for _ in range(10):          # 40 answers every 10 s
        now[0] += 10
        bar.update(40)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "  judge sampling: 120/400 answers (30%), 4 answers/s, ETA 1m10s"
    assert len(lines) == 4 and lines[-1] == "  judge sampling: 400/400 answers (100%), 4 answers/s, done in 1m40s"
    quick = io.StringIO()
    with Progress(total=3, desc="fast", stream=quick, every=30, clock=lambda: 0.0) as bar:
        bar.update(3)
    assert quick.getvalue() == ""   # work shorter than the interval says nothing
    unknown = io.StringIO()
    bar = Progress(desc="cleaning", unit="shards", stream=unknown, every=0, clock=lambda: now[0])
    now[0] += 5
    bar.set_postfix(task="x")
    bar.update()
    assert unknown.getvalue() == "  cleaning: 1 shards, 0.2 shards/s, task x\n"
    assert duration(3725) == "1h02m"
