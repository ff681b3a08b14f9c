"""`hallfleet demo` plays the two halls' morning on simulated devices: punches, ratings, kiosk events, an
incident, alerts at the local sink, the reports at the end; and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path


def processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def count(db: Path, sql: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute(sql).fetchone()[0])


def test_demo_plays_the_halls_morning_writes_reports_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hallfleet.cli", "demo", "--devices", "6", "--rate", "3", "--dir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 200  # about 45 s on an idle machine; CI may share it
        seen = ""
        assert proc.stdout is not None
        # The scripted incident (a kiosk application down) and the negative rating's follow-up.
        while "停止服务" not in seen or "差评跟踪 1" not in seen or "告警 →" not in seen:
            assert time.monotonic() < deadline, f"the scenario did not play within 200 s:\n{seen}"
            line = proc.stdout.readline()
            assert line, f"demo exited early:\n{seen}"
            seen += line
        assert "密码 password:" in seen and "http://127.0.0.1:" in seen, "the dashboard and its demo user are shown"
        assert processes_mentioning(str(workdir)), "the demo's broker should be running"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, seen + out
    assert "已关机 (shutdown)" in out, "devices say goodbye on Ctrl-C"
    assert "死信 dead letters: 0" in out

    db = workdir / "hallfleet.db"
    assert count(db, "SELECT count(*) FROM events WHERE type = 'attendance.punch'") >= 2
    assert count(db, "SELECT count(*) FROM events WHERE type = 'rating.submitted'") >= 2
    assert count(db, "SELECT count(*) FROM events WHERE type LIKE 'kiosk.%'") >= 4
    assert count(db, "SELECT count(*) FROM incidents WHERE kind = 'kiosk_down'") >= 1
    assert count(db, "SELECT count(*) FROM rating_followups") >= 1
    assert count(db, "SELECT count(DISTINCT site) FROM staff") == 2
    assert (workdir / "alerts.log").read_text().strip(), "alerts reached the local sink"
    reports = sorted(p.name for p in (workdir / "reports").iterdir())
    assert len(reports) == 6 and all(p.stat().st_size > 0 for p in (workdir / "reports").iterdir()), reports
    time.sleep(0.5)
    assert processes_mentioning(str(workdir)) == [], "Ctrl-C must leave no process behind"
