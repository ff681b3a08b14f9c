"""A stand-in for systemd in the update tests: runs the agent from the ``current`` symlink and starts it again.

    python -m tests.support.supervise PIDFILE -- CMD ...

Like the agent's unit (Restart=on-failure, RestartSec=2, here shorter): an agent that exits is started again
after ``RESTART_S``; SIGHUP is ``systemctl restart`` (SIGTERM to the agent, wait, start again, resolving
``current`` anew because CMD names the path through it); SIGTERM stops the agent and the supervisor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

RESTART_S = 0.5
STOP_S = 15


class Supervisor:
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.child: subprocess.Popen[bytes] | None = None
        self.restart = False
        self.stop = False

    def start(self) -> None:
        self.child = subprocess.Popen(self.argv)
        print(f"supervise: started pid {self.child.pid}: {' '.join(self.argv)}", flush=True)

    def end_child(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(STOP_S)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()

    def on_hup(self, _sig: int, _frame: FrameType | None) -> None:
        self.restart = True

    def on_term(self, _sig: int, _frame: FrameType | None) -> None:
        self.stop = True

    def run(self) -> int:
        self.start()
        while not self.stop:
            time.sleep(0.05)
            assert self.child is not None
            if self.restart:
                self.restart = False
                print("supervise: restart requested", flush=True)
                self.end_child()
                self.start()
            elif self.child.poll() is not None:
                print(f"supervise: agent exited {self.child.returncode}; starting it again", flush=True)
                time.sleep(RESTART_S)
                if not self.stop:
                    self.start()
        self.end_child()
        return 0


def main() -> int:
    pidfile, sep, *argv = sys.argv[1:]
    if sep != "--" or not argv:
        print("usage: python -m tests.support.supervise PIDFILE -- CMD ...", file=sys.stderr)
        return 64
    sup = Supervisor(argv)
    signal.signal(signal.SIGHUP, sup.on_hup)
    signal.signal(signal.SIGTERM, sup.on_term)
    Path(pidfile).write_text(f"{os.getpid()}\n")
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
