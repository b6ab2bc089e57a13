"""Bad input at the command line never ends in a traceback: one line naming the problem, and no secret in it.

Every case runs the real `monitor` command through its entry point (``run_cli``), on a real SQLite file
(PostgreSQL where locking or a server is the point); in a process of its own where signals, start-up, a
running daemon or memory are the point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import text

from monitor.config import Settings
from monitor.errors import StorageError
from monitor.ops.health import HealthServer
from monitor.pipeline.importing import MAX_NAMED_ERRORS
from monitor.storage import Storage
from tests.support import free_port, run_cli, running_daemon, stories_of, wait_until, write_seeds

MONITOR = Path(sys.executable).parent / "monitor"
SECRET = "S3cretPW"


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """A SQLite database and a feeds file with one digest, in tmp_path; more MONITOR_* as keywords."""
    feeds_file = tmp_path / "feeds.yaml"
    if not feeds_file.exists():
        feeds_file.write_text(
            "feeds: []\ndigests:\n  - {name: matin, recipients: [veille@example.fr], schedule: '0 7 * * *', "
            "send_empty: true}\n",
            encoding="utf-8",
        )
    return {
        "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
        "MONITOR_FEEDS_FILE": str(feeds_file),
        **{f"MONITOR_{name.upper()}": value for name, value in settings.items()},
    }


def _one_error_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """The command failed with exactly one line on stderr, holding ``words``; that line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GLOBAL_CONCURRENCY", "0"),
        ("HOST_CONCURRENCY", "0"),
        ("READ_TIMEOUT", "0"),
        ("CONNECT_TIMEOUT", "-1"),
        ("REQUEST_DEADLINE", "inf"),
        ("MAX_REDIRECTS", "-1"),
        ("MAX_BODY_BYTES", "0"),
        ("MAX_ITEMS_PER_FEED", "0"),
        ("ITEM_MAX_ATTEMPTS", "0"),
        ("LEASE_SECONDS", "0"),
        ("POLL_SECONDS", "0"),
        ("EXTRACT_TIMEOUT", "0"),
        ("EXTRACT_PROCESSES", "-1"),
        ("IMPORT_MAX_LINE_BYTES", "10"),
        ("STORY_THRESHOLD", "2"),
        ("STORY_MERGE_THRESHOLD", "0"),
        ("STORY_WINDOW_DAYS", "-1"),
        ("SMTP_PORT", "99999"),
        ("HTTP_PORT", "0"),
        ("SMTP_TIMEOUT", "nan"),
        ("SMTP_FROM", "personne"),
        ("RETENTION_DAYS", "-5"),
        ("DISABLE_AFTER_DAYS", "0"),
        ("MAX_INTERVAL", "5m"),  # below the default interval, 15m
        ("DEFAULT_INTERVAL", "10s"),
        ("MERGE_SCHEDULE", "61 * * * *"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_FORMAT", "xml"),
        ("TEMPLATES_DIR", "/nonexistent/templates"),
        ("USER_AGENT", "bot\r\nX-Injected: 1"),
        # too large: a timedelta or a socket timeout overflows, or the machine runs out of processes or memory
        ("LEASE_SECONDS", "1e300"),
        ("POLL_SECONDS", "1e300"),
        ("DISABLE_AFTER_DAYS", "1e300"),
        ("RETENTION_DAYS", "1e300"),
        ("HOST_MIN_INTERVAL", "1e300"),
        ("CONNECT_TIMEOUT", "1e300"),
        ("READ_TIMEOUT", "1e300"),
        ("REQUEST_DEADLINE", "1e300"),
        ("EXTRACT_TIMEOUT", "1e300"),
        ("SMTP_TIMEOUT", "1e300"),
        ("STORY_WINDOW_DAYS", "1e300"),
        ("STORY_MAX_SPAN_DAYS", "1e300"),
        ("ITEM_MAX_ATTEMPTS", "1000"),  # the retry backoff doubles with each attempt
        ("EXTRACT_PROCESSES", "100000"),
        ("GLOBAL_CONCURRENCY", "1000000"),
        ("HOST_CONCURRENCY", "100000"),
        ("MAX_BODY_BYTES", "100000000000"),
        ("MAX_ITEMS_PER_FEED", "100000000"),
        ("IMPORT_MAX_LINE_BYTES", "100000000000"),
        ("STORY_REFINE_ROUNDS", "100000000"),
    ],
)
def test_a_bad_setting_stops_the_start_in_one_line(tmp_path: Path, variable: str, value: str) -> None:
    result = run_cli("run", "--once", env=_env(tmp_path, **{variable.lower(): value}))
    line = _one_error_line(result, f"MONITOR_{variable}:")
    assert result.returncode == 2 and line.startswith("monitor: error: ")
    assert not (tmp_path / "cli.db").exists()  # stopped before touching anything


def test_a_sqlite_database_in_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    env = _env(tmp_path, database_url=f"sqlite:///{missing}/monitor.db")
    for command in (["run", "--once"], ["db", "upgrade"]):
        result = run_cli(*command, env=env)
        line = _one_error_line(result, str(missing))
        assert result.returncode == 2 and line.startswith("monitor: error: "), line
    assert not missing.exists()


def test_eval_with_unknown_label_names_it(tmp_path: Path) -> None:
    archive = tmp_path / "labelled.jsonl"
    write_seeds(archive, same_day=False)
    _one_error_line(run_cli("eval", str(archive), "--label", "sujet", env=_env(tmp_path)), "line 1", "'sujet'")


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (b"{not json", ("line 3", "not JSON", "and 1 more")),
        (
            b'{"url": "https://a.fr/x", "text": "caf\xe9", "published_at": "2024-11-05T10:00:00Z", "story": "x"}',
            ("line 3", "not UTF-8"),
        ),
    ],
    ids=["not-json", "latin-1"],
)
def test_eval_with_a_bad_line_names_it(tmp_path: Path, bad: bytes, words: tuple[str, ...]) -> None:
    archive = tmp_path / "labelled.jsonl"
    write_seeds(archive, same_day=False)
    lines = archive.read_bytes().splitlines()
    extra = [bad, b"[1, 2]"] if bad.startswith(b"{not") else [bad]
    archive.write_bytes(b"\n".join([*lines[:2], *extra, *lines[2:]]) + b"\n")
    _one_error_line(run_cli("eval", str(archive), env=_env(tmp_path)), *words)


def test_digest_preview_into_a_missing_directory(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "out.html"
    result = run_cli("digest", "matin", "--preview", str(target), env=_env(tmp_path))
    _one_error_line(result, str(target))


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("<p>{% for s in digest.stories %}{{ s.title }</p>", ("digest.html.j2", "line 1")),
        ("<p>{{ nothing.at_all }}</p>", ("digest.html.j2", "'nothing' is undefined")),
    ],
    ids=["syntax", "undefined"],
)
def test_a_broken_user_template_is_one_line(tmp_path: Path, template: str, words: tuple[str, ...]) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "digest.html.j2").write_text(template, encoding="utf-8")
    env = _env(tmp_path, templates_dir=str(templates))
    _one_error_line(run_cli("digest", "matin", "--preview", str(tmp_path / "out.html"), env=env), *words)


def _program_started(pid: int) -> bool:
    """Whether `monitor` itself runs: the interpreter's own start-up (site, before any program) dies of
    Ctrl-C with a traceback no program can catch, and on a loaded machine it lasts longer than any fixed
    delay. pydantic's compiled core is loaded by the command's imports, after its Ctrl-C guard is set."""
    return "_pydantic_core" in Path(f"/proc/{pid}/maps").read_text(encoding="utf-8", errors="replace")


# Counted from when the program runs (_program_started): during its imports, its start-up, its work.
@pytest.mark.parametrize("delay", [0.2, 0.8, 4.0])
@pytest.mark.parametrize("command", [("run",), ("import", "-")], ids=["run", "import-waiting-on-stdin"])
def test_ctrl_c_at_any_moment_ends_cleanly(tmp_path: Path, command: tuple[str, ...], delay: float) -> None:
    """During the imports, during start-up, or once the command works: no traceback, an orderly exit."""
    env = {**os.environ, **_env(tmp_path, poll_seconds="1")}
    out_file, err_file = tmp_path / "stdout", tmp_path / "stderr"
    with out_file.open("w") as stdout, err_file.open("w") as stderr:
        # stdin left open until the end (communicate() would close it): the import waits for its first line
        process = subprocess.Popen(
            [str(MONITOR), *command], env=env, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr
        )
    assert wait_until(lambda: _program_started(process.pid), timeout_s=60, step_s=0.01)
    timer = threading.Timer(delay, process.send_signal, (signal.SIGINT,))
    timer.start()
    try:
        process.wait(timeout=60)
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
        assert process.stdin is not None
        process.stdin.close()
    out, err = out_file.read_text(encoding="utf-8"), err_file.read_text(encoding="utf-8")
    assert "Traceback" not in out + err, err
    assert process.returncode in (0, 130), (process.returncode, err)
    if process.returncode == 130:
        assert err.strip().splitlines()[-1] == "monitor: interrupted", err


# --- monitor import ----------------------------------------------------------


def _line(url: str, published_at: str = "2024-11-05T10:00:00+01:00", **extra: object) -> str:
    return json.dumps(
        {"url": url, "title": "Un titre", "text": "Un texte suffisant. " * 20, "published_at": published_at, **extra}
    )


def test_import_reads_a_file_saved_with_a_bom(tmp_path: Path) -> None:
    archive = tmp_path / "bom.jsonl"
    write_seeds(archive, same_day=False)
    archive.write_bytes(b"\xef\xbb\xbf" + archive.read_bytes())
    env = _env(tmp_path)
    result = run_cli("import", str(archive), env=env)
    assert result.returncode == 0 and "5 articles added, 0 already known, 0 lines skipped" in result.stdout, result
    assert len(stories_of(env["MONITOR_DATABASE_URL"])) == 5


def test_import_skips_an_over_long_line_in_bounded_memory(tmp_path: Path) -> None:
    """A 40 MB line (it once took 1.35 GB) is skipped with its number, read 5 MiB at most; the rest imports."""
    archive = tmp_path / "long.jsonl"
    huge = _line("https://a.example.fr/huge", text="x" * 40_000_000)
    write_seeds(archive, same_day=False, extra_lines=[huge])
    env = _env(tmp_path)
    result = subprocess.run(
        ["/usr/bin/time", "-f", "maxrss_kb=%M", sys.executable, "-m", "monitor", "import", str(archive)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "5 articles added, 0 already known, 1 line skipped" in result.stdout
    (skipped,) = [line for line in result.stderr.splitlines() if ":line " in line]
    assert skipped == f"{archive}:line 3: longer than {5 * 1024 * 1024} bytes (MONITOR_IMPORT_MAX_LINE_BYTES), skipped"
    peak_mb = int(result.stderr.rsplit("maxrss_kb=", 1)[1].split()[0]) / 1024
    assert peak_mb < 600, peak_mb
    assert len(stories_of(env["MONITOR_DATABASE_URL"])) == 5


def test_import_line_cap_is_a_setting(tmp_path: Path) -> None:
    archive = tmp_path / "cap.jsonl"
    archive.write_text(
        _line("https://a.example.fr/short") + "\n" + _line("https://a.example.fr/long", text="y" * 5000) + "\n",
        encoding="utf-8",
    )
    result = run_cli("import", str(archive), env=_env(tmp_path, import_max_line_bytes="2048"))
    assert result.returncode == 0 and "1 article added" in result.stdout, result
    assert f"{archive}:line 2: longer than 2048 bytes" in result.stderr


def test_import_refuses_dates_in_the_future(tmp_path: Path) -> None:
    archive = tmp_path / "future.jsonl"
    soon = (datetime.now(UTC) + timedelta(hours=20)).isoformat()
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    archive.write_text(
        _line("https://a.example.fr/soon", soon) + "\n" + _line("https://a.example.fr/later", later) + "\n",
        encoding="utf-8",
    )
    result = run_cli("import", str(archive), env=_env(tmp_path))
    assert result.returncode == 0 and "1 article added, 0 already known, 1 line skipped" in result.stdout, result
    (refused,) = [line for line in result.stderr.splitlines() if ":line " in line]
    assert refused.startswith(f"{archive}:line 2: field 'published_at': ") and "future" in refused


def test_import_reads_standard_input(tmp_path: Path) -> None:
    archive = tmp_path / "stdin.jsonl"
    write_seeds(archive, same_day=False, extra_lines=["{not json"])
    env = _env(tmp_path)
    result = subprocess.run(
        [str(MONITOR), "import", "-"],
        input=archive.read_text(encoding="utf-8"),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "5 articles added, 0 already known, 1 line skipped" in result.stdout
    assert "stdin:line 3: not JSON" in result.stderr
    assert len(stories_of(env["MONITOR_DATABASE_URL"])) == 5


def test_a_file_that_is_no_archive_is_named_a_hundred_lines_at_most(tmp_path: Path) -> None:
    """The wrong file (a binary, another export) fails on every line: the first hundred say why, the rest
    are counted, and memory holds no more."""
    archive = tmp_path / "binaire.jsonl"
    archive.write_bytes(b"\xff\xfe pas du JSON\n" * 250)
    result = run_cli("import", str(archive), env=_env(tmp_path))
    assert result.returncode == 0 and "0 articles added, 0 already known, 250 lines skipped" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == MAX_NAMED_ERRORS + 1 and lines[-1] == f"{archive}: … and 150 more lines", lines[-3:]
    assert lines[MAX_NAMED_ERRORS - 1].startswith(f"{archive}:line {MAX_NAMED_ERRORS}: not UTF-8")


def test_import_messages_name_fields_not_classes(tmp_path: Path) -> None:
    archive = tmp_path / "odd.jsonl"
    odd = [
        "[1, 2, 3]",
        '"une chaîne"',
        json.dumps({"url": {"href": "https://a.fr"}, "text": "t", "published_at": "2024-11-05T10:00:00Z"}),
        json.dumps({"url": "https://a.fr/x", "text": ["t"], "published_at": {"jour": 5}}),
        json.dumps({"url": "https://a.fr/y", "text": "\ud800 seul", "published_at": "2024-11-05T10:00:00Z"}),
        "1" * 5000,
    ]
    archive.write_bytes(("\n".join(odd) + "\n").encode("utf-8", "surrogatepass") + b"\xff\xfe\n")
    result = run_cli("import", str(archive), env=_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "0 articles added, 0 already known, 7 lines skipped" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert [line.split(":", 2)[1] for line in lines] == [f"line {n}" for n in range(1, 8)], lines
    assert "field 'url': " in lines[2] and "field 'published_at': " in lines[3] and "field 'text': " in lines[3]
    assert "surrogate" in lines[4] and "not UTF-8" in lines[6]
    for line in lines:
        assert "ImportLine" not in line and "instance of" not in line and "Traceback" not in line, line


# --- secrets -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"nonsense://user:{SECRET}@h/x",
        f"postgresql+psycopg://user:{SECRET}@127.0.0.1:1/x",  # nothing listens on port 1
        f"postgresql+psycopg://user:{SECRET}@127.0.0.1:notaport/x",
        f"not a url {SECRET}",
        f"nonsense://user@h/x?password={SECRET}",  # libpq takes it from the query string too
        f"postgresql+psycopg://user@127.0.0.1:1/x?password={SECRET}",
        f"postgresql+psycopg://user@127.0.0.1:1/x?sslmode=disable&sslpassword={SECRET}",
        f"postgresql+psycopg://user@127.0.0.1:notaport/x?password={SECRET}",
    ],
)
def test_a_database_url_is_never_printed_with_its_password(tmp_path: Path, url: str) -> None:
    for command in (["db", "status"], ["db", "upgrade"], ["run", "--once"], ["stories"]):
        result = run_cli(*command, env=_env(tmp_path, database_url=url))
        line = _one_error_line(result)
        assert SECRET not in result.stdout + result.stderr, line


@pytest.mark.parametrize(
    ("where", "shown"),
    [("user", "monitor running on postgresql+psycopg://postgres:***@"), ("query", "?password=***")],
)
def test_the_running_daemon_logs_its_database_without_the_password(
    tmp_path: Path, postgres_url: str, where: str, shown: str
) -> None:
    # trust auth: any password will do
    if where == "user":
        url = postgres_url.replace("://postgres@", f"://postgres:{SECRET}@", 1)
    else:
        url = f"{postgres_url}?password={SECRET}"
    assert SECRET in url
    port = free_port()
    env = {**os.environ, **_env(tmp_path, database_url=url, http_port=str(port), log_level="DEBUG")}

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    with running_daemon(env) as daemon:
        assert wait_until(healthy, timeout_s=60)
    assert shown in daemon.stderr
    assert SECRET not in daemon.stderr


def test_smtp_password_stays_secret(tmp_path: Path) -> None:
    settings = Settings(smtp_user="veille", smtp_password=SECRET)  # type: ignore[arg-type]
    assert SECRET not in repr(settings) + str(settings) + settings.model_dump_json()
    env = _env(tmp_path, smtp_host="127.0.0.1", smtp_port="1", smtp_security="none", smtp_user="veille")
    env |= {"MONITOR_SMTP_PASSWORD": SECRET, "MONITOR_LOG_LEVEL": "DEBUG"}
    result = run_cli("digest", "matin", "--send", env=env)
    assert result.returncode == 1 and "pending" in result.stdout, result
    assert SECRET not in result.stdout + result.stderr


def test_smtp_password_is_still_used_to_log_in(tmp_path: Path) -> None:
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        assert isinstance(auth_data, LoginPassword)
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == SECRET.encode())

    class Sink:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            return "250 OK"

    controller = Controller(
        Sink(), hostname="127.0.0.1", port=free_port(), authenticator=authenticator, auth_require_tls=False
    )
    controller.start()
    try:
        env = _env(
            tmp_path, smtp_host="127.0.0.1", smtp_port=str(controller.port), smtp_security="none", smtp_user="veille"
        )
        result = run_cli("digest", "matin", "--send", env={**env, "MONITOR_SMTP_PASSWORD": SECRET})
    finally:
        controller.stop()
    assert result.returncode == 0 and ": sent" in result.stdout, result
    assert logins == [(b"veille", SECRET.encode())]


def test_database_errors_do_not_show_bound_parameters(database_url: str) -> None:
    storage = Storage(database_url)
    storage.ensure_schema(upgrade=True)
    insert = text("INSERT INTO meta (key, value) VALUES (:key, :value)")
    with storage.repository() as repo:
        repo.session.execute(insert, {"key": "k", "value": "first"})
    with pytest.raises(StorageError) as info, storage.repository() as repo:
        repo.session.execute(insert, {"key": "k", "value": SECRET})
    assert SECRET not in str(info.value) and "parameters hidden" in str(info.value)
    storage.engine.dispose()


def test_readyz_says_only_that_the_database_is_unreachable() -> None:
    server = HealthServer(Storage(f"postgresql+psycopg://user:{SECRET}@127.0.0.1:1/x"), "127.0.0.1", 0)
    server.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=10)
    finally:
        server.stop()
    assert info.value.code == 503 and info.value.read() == b"database unreachable\n"


# --- migrations --------------------------------------------------------------


def test_db_upgrades_at_once_all_succeed(tmp_path: Path, postgres_url: str) -> None:
    """`monitor db upgrade && monitor run` under --scale: upgrades started together take turns (without the
    lock, two of four racing to create the same tables fail nearly every time)."""
    env = {**os.environ, **_env(tmp_path, database_url=postgres_url)}
    processes = [
        subprocess.Popen(
            [str(MONITOR), "db", "upgrade"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    for code, out, err in results:
        assert code == 0 and "schema at revision" in out, (code, out, err)
    assert len({out for _code, out, _err in results}) == 1
