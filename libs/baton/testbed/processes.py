"""Baton services as separate OS processes (`python -m baton run ...`), for end-to-end tests and the bench."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ServiceProcesses:
    """Starts, kills and stops service processes; their output goes to files under logdir."""

    env: Mapping[str, str]
    logdir: Path
    cwd: Path | None = None  # where the processes run (default: this process's working directory)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """A Baton service: `python -m baton run <args>` (env: this process's own settings on top)."""
        return self.spawn(name, "-m", "baton", "run", *args, env=env)

    def spawn(self, name: str, *argv: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Any Python entry point of this environment (`python <argv>`), with the same environment and log."""
        log = (self.logdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, *argv],
            env={**os.environ, **self.env, **(env or {})},
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown hook runs, nothing is committed."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    def dead(self) -> list[str]:
        """Names of processes that exited on their own, with their exit codes."""
        return [f"{n} (exit {p.returncode})" for n, p in self.procs.items() if p.poll() is not None]

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
