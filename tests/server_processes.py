"""Real ``bastion serve`` processes for the tests that need more than one
server (shared rate limits, scale-out) or a real socket (nginx in front).

Each server is ``python -m bastion.cli serve --port <free port>`` with an
environment built from scratch (:func:`server_env`: every inherited
``BASTION_*`` dropped, so a developer's shell or ``.env`` cannot leak in) and
its output in a log file whose tail goes into the failure message.

Waiting is event-driven: :func:`wait_until_up` polls ``/health`` with
``asyncio.sleep`` until a deadline and fails at once if the process died.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

BASTION = [sys.executable, "-m", "bastion.cli"]
"""The ``bastion`` command of this interpreter's environment."""

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any ``BASTION_*``, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(settings)
    return env


@dataclass
class ServerProcess:
    """One running ``bastion serve``."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> int:
        """SIGKILL: no shutdown hook runs, as in a crash or an OOM kill."""
        self.process.send_signal(signal.SIGKILL)
        return self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful shutdown), SIGKILL if that hangs."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


def start_server(env: Mapping[str, str], cwd: Path, *, port: int | None = None) -> ServerProcess:
    """Start ``bastion serve`` on ``port`` (a free one by default); does not wait."""
    port = port or free_port()
    log = cwd / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*BASTION, "serve", "--host", HOST, "--port", str(port)],
            env=dict(env),
            cwd=cwd,  # no developer's .env is read from here
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return ServerProcess(process, port, log)


@contextmanager
def servers(count: int, env: Mapping[str, str], cwd: Path) -> Iterator[list[ServerProcess]]:
    """``count`` servers on one configuration, stopped afterwards."""
    started: list[ServerProcess] = []
    try:
        for _ in range(count):
            started.append(start_server(env, cwd))
        yield started
    finally:
        for server in started:
            server.stop()


def run_cli(env: Mapping[str, str], cwd: Path, *args: str, stdin: str | None = None) -> str:
    """Run one ``bastion`` command to completion (``stdin`` as its input); its
    standard output."""
    done = subprocess.run(
        [*BASTION, *args],
        env=dict(env),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"bastion {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout


async def wait_until_up(
    http: httpx.AsyncClient, server: ServerProcess, *, within: float = 30.0
) -> None:
    """Poll ``/health`` until it answers 200; fail with the log tail if the
    process exits or ``within`` seconds pass first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"{server.url} exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            if (await http.get(f"{server.url}/health", timeout=2)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{server.url} did not come up in {within} s:\n{server.log_tail()}")


async def wait_all_up(http: httpx.AsyncClient, started: list[ServerProcess]) -> None:
    await asyncio.gather(*(wait_until_up(http, server) for server in started))
