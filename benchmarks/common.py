"""What the benchmarks share: running the real CLI as a child process, and naming the machine."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class Run:
    started: float  # time.monotonic() at launch
    seconds: float
    stdout: str
    stderr: str
    max_rss_kib: int


def run_cli(args: list[str], env: dict[str, str], workdir: Path, timeout_s: float = 300.0) -> Run:
    """`python -m monitor ARGS` with no inherited MONITOR_* or proxy variables (requests stay on loopback);
    wall clock and this child's own peak RSS. Exits the benchmark, with the child's stderr, if it fails."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_") and not k.lower().endswith("_proxy")}
    out_path, err_path = workdir / "stdout.txt", workdir / "stderr.txt"
    with out_path.open("w") as out, err_path.open("w") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", *args], env={**base, **env}, cwd=workdir, stdout=out, stderr=err
        )
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the running maximum
        finally:
            timer.cancel()
        seconds = time.monotonic() - started
    stderr = err_path.read_text(encoding="utf-8", errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"monitor {' '.join(args)} exited {code} after {seconds:.1f} s:\n{stderr[-2000:]}")
    return Run(started, seconds, out_path.read_text(encoding="utf-8"), stderr, usage.ru_maxrss)


def machine() -> None:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    print(f"machine: nproc {len(os.sched_getaffinity(0))}, CPU {cpu}, Python {platform.python_version()}")


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A throwaway database on the server behind the admin URL, dropped afterwards (as tests/conftest.py does)."""
    name = f"monitor_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url


@contextmanager
def database(admin_url: str, existing: str | None, keep: bool) -> Iterator[str]:
    """The corpus database's SQLAlchemy URL: an existing one, a new one kept, or a throwaway one."""
    if existing:
        yield sqlalchemy_url(existing)
        return
    if not keep:
        with postgres_database(admin_url) as url:
            yield url
        return
    name = f"monitor_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{sqlalchemy_url(admin_url.rsplit('/', 1)[0])}/{name}"
    try:
        yield url
    finally:
        print(f"\ndatabase kept (reuse it with --database {psycopg_url(url)}; drop it when done)")


def article_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM articles").fetchone()
    return int(row[0]) if row else 0
