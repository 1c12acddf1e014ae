"""Runs a guide's shell blocks word for word, as a newcomer's terminal would.

Every line of every ```sh block of a Markdown guide is a command. `GuideShell` runs them in order:
`export` lines change the environment of every later line, a line ending in `&` starts a background
process (a `ServiceProcesses` entry, its output in a log file), `kill $(jobs -p)` stops them, and any other
line runs through bash and must exit 0. The few setup lines a test does itself (the virtual environment,
the working directory, the broker) are named in `emulated`: the test says which and why.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from baton.testbed.processes import ServiceProcesses


@dataclass(frozen=True)
class GuideLine:
    """One command of the guide and the section (## heading) it is in."""

    section: str
    command: str


def guide_commands(path: Path) -> list[GuideLine]:
    """Every command of the ```sh blocks, in order (continuation lines joined, comments dropped)."""
    lines: list[GuideLine] = []
    section = ""
    in_block = False
    pending = ""
    for raw in path.read_text().splitlines():
        if not in_block and raw.startswith("## "):
            section = raw[3:].strip()
        elif raw.strip() == "```sh":
            in_block = True
        elif in_block and raw.strip() == "```":
            in_block = False
        elif in_block:
            text = pending + raw.strip()
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            if text and not text.startswith("#"):
                lines.append(GuideLine(section, text))
    return lines


def wait_for_port(port: int, *, timeout_s: float = 20.0, alive: subprocess.Popen[bytes] | None = None) -> None:
    """Return once something listens on 127.0.0.1:port; fail when the process serving it died first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"the process that should listen on {port} exited with {alive.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def port_is_free(port: int) -> bool:
    """Whether nobody listens on 127.0.0.1:port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT does not count
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class GuideShell:
    """A terminal with the checkout's virtual environment activated, in cwd."""

    cwd: Path
    logdir: Path
    emulated: Mapping[str, str] = field(default_factory=dict)  # command -> why the test does it itself
    substitutions: Mapping[str, str] = field(default_factory=dict)  # text -> what the test puts instead
    ready_ports: Mapping[str, int] = field(default_factory=dict)  # background command -> port it serves
    env: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # command -> its stdout (the last run's)
    procs: ServiceProcesses = field(init=False)

    def __post_init__(self) -> None:
        venv_bin = str(Path(sys.executable).parent)
        # A newcomer's shell: no BATON_* setting of the test session leaks in; the venv is first on PATH.
        self.env.update({k: v for k, v in os.environ.items() if not k.startswith("BATON_")})
        self.env["PATH"] = venv_bin + os.pathsep + self.env.get("PATH", "")
        self.env["VIRTUAL_ENV"] = str(Path(venv_bin).parent)
        self.env["PWD"] = str(self.cwd)
        self.procs = ServiceProcesses(env=self.env, logdir=self.logdir, cwd=self.cwd)

    def _text(self, command: str) -> str:
        for old, new in self.substitutions.items():
            command = command.replace(old, new)
        return command

    def run(self, line: GuideLine, *, timeout_s: float = 300.0) -> str:
        """Run one command of the guide; returns its stdout (empty for background and emulated lines)."""
        if line.command in self.emulated:
            return ""
        dead = self.procs.dead()
        if dead:
            raise AssertionError(f"before `{line.command}`: background processes exited: {dead}\n{self.tails()}")
        command = self._text(line.command)
        if command == "kill $(jobs -p)":
            self.procs.stop_all()  # SIGTERM to each, then waits for each to exit
            return ""
        if command == "wait":
            return ""  # stop_all already waited
        if command.endswith("&"):
            argv = shlex.split(command[:-1])
            name = re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(argv[1:]))
            if argv[:2] == ["baton", "run"]:
                proc = self.procs.start(name, *argv[2:])
            elif argv[0] == "baton":
                proc = self.procs.spawn(name, "-m", "baton", *argv[1:])
            elif argv[0] == "python":
                proc = self.procs.spawn(name, *argv[1:])
            else:
                raise AssertionError(f"the guide starts {argv[0]!r} in the background; the test knows no such thing")
            if line.command in self.ready_ports:
                wait_for_port(self.ready_ports[line.command], alive=proc)
            return ""
        if command.startswith("export "):
            # bash expands the values ($PWD, ...); the environment it ends with is the shell's from now on.
            exported = subprocess.run(
                ["bash", "-c", f"{command} && env -0"], env=self.env, cwd=self.cwd, capture_output=True, check=True
            ).stdout.decode()
            self.env.clear()
            for kv in exported.split("\0"):
                name, _, value = kv.partition("=")
                if name:
                    self.env[name] = value
            return ""
        done = subprocess.run(
            ["bash", "-c", command], env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=timeout_s
        )
        if done.returncode != 0:
            raise AssertionError(
                f"`{line.command}` ({line.section}) exited {done.returncode}\n--- stdout\n{done.stdout[-4000:]}"
                f"\n--- stderr\n{done.stderr[-4000:]}\n--- background processes that died: {self.procs.dead()}"
            )
        self.outputs[line.command] = done.stdout
        return done.stdout

    def tails(self) -> str:
        """The last lines of every background process's log (for a failure message)."""
        return "\n".join(f"--- {name}\n{self.procs.tail(name)}" for name in self.procs.procs)
