"""`hallfleet demo` shows events flowing, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import signal
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


def test_demo_shows_events_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hallfleet.cli",
            "demo",
            "--devices",
            "6",
            "--rate",
            "5",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        seen = ""
        assert proc.stdout is not None
        while "rating.submitted" not in seen or "在线" not in seen:
            assert time.monotonic() < deadline, f"no events shown within 60 s:\n{seen}"
            line = proc.stdout.readline()
            assert line, f"demo exited early:\n{seen}"
            seen += line
        assert processes_mentioning(str(workdir)), "the demo's broker should be running"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "已关机 (shutdown)" in out, "devices say goodbye on Ctrl-C"
    assert "死信 dead letters: 0" in out
    time.sleep(0.5)
    assert processes_mentioning(str(workdir)) == [], "Ctrl-C must leave no process behind"
