"""The JSON API of `monitor web`, through real HTTP against the real command, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import html
import os
import socket
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from monitor.config import Settings
from monitor.desk.read import Desk
from tests.support import connected, free_port, loopback_env, run_cli, run_process, seed_database, serving, wait_until


def test_stories_search_and_story(seeded_desk: tuple[str, dict[str, str], dict[str, int]]) -> None:
    base, _env, story = seeded_desk
    assert story["000"] == story["001"] == story["002"] == story["003"] != story["004"]
    page = httpx.get(f"{base}/api/stories").json()
    assert page["total"] == 3 and page["offset"] == 0 and page["next_offset"] is None
    first = page["items"][0]  # the most outlets first, as in digests
    assert first["id"] == story["000"] and first["outlet_count"] == 4 and first["article_count"] == 4
    assert sorted(first["outlets"]) == ["outlet-000", "outlet-001", "outlet-002", "outlet-003"]
    for moment in (first["first_published_at"], first["last_published_at"]):
        assert datetime.fromisoformat(moment).utcoffset() is not None  # ISO 8601 with an offset

    paged = httpx.get(f"{base}/api/stories", params={"limit": 1, "offset": 1}).json()
    assert paged["total"] == 3 and len(paged["items"]) == 1 and paged["next_offset"] == 2
    assert paged["items"][0]["id"] == page["items"][1]["id"]
    narrow = httpx.get(f"{base}/api/stories", params={"min_outlets": 2}).json()
    assert [s["id"] for s in narrow["items"]] == [story["000"]]
    by_outlet = httpx.get(f"{base}/api/stories", params={"outlet": "OUTLET-004"}).json()
    assert [s["id"] for s in by_outlet["items"]] == [story["004"]]
    in_range = httpx.get(f"{base}/api/stories", params={"since": "2024-11-06", "until": "2024-11-06"}).json()
    assert story["004"] not in [s["id"] for s in in_range["items"]]
    assert httpx.get(f"{base}/api/stories", params={"tag": "nothing"}).json()["total"] == 0

    detail = httpx.get(f"{base}/api/stories/{story['000']}").json()
    assert detail["id"] == story["000"] and detail["lead"]
    assert sorted(a["source"] for a in detail["articles"]) == [f"outlet-00{n}" for n in range(4)]
    for article in detail["articles"]:
        assert article["placement_method"] in ("new_story", "story_match", "near_copy", "moved")
        assert {"url", "published_at", "duplicate_of_id", "placement_score", "matched_story_id"} <= set(article)
    assert httpx.get(f"{base}/api/stories/999999").status_code == 404

    found = httpx.get(f"{base}/api/search", params={"q": "militaires", "limit": 1}).json()
    assert found["total"] >= 1 and len(found["items"]) == 1  # total is the true count, not the limit
    hit = found["items"][0]
    assert any(s["match"] for s in hit["snippet"] + hit["title"])
    marked = [s["text"].lower() for s in hit["snippet"] + hit["title"] if s["match"]]
    assert all(word.startswith("milit") for word in marked)


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/stories", {"limit": "0"}, "limit"),
        ("/api/stories", {"offset": "-1"}, "offset"),
        ("/api/stories", {"min_outlets": "x"}, "min_outlets"),
        ("/api/stories", {"since": "hier"}, "since"),
        ("/api/stories", {"since": "2024-11-06", "until": "2024-11-01"}, "until"),
        ("/api/stories", {"q": "Meta OR Google"}, "q"),
        ("/api/search", {"q": '"open source'}, "q"),
        ("/api/search", {"q": "Meta -Google"}, "q"),
        ("/api/search", {}, "q"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(
    seeded_desk: tuple[str, dict[str, str], dict[str, int]], path: str, params: dict[str, str], field: str
) -> None:
    base, _env, _story = seeded_desk
    response = httpx.get(base + path, params=params)
    assert response.status_code == 422, response.text
    assert [e["loc"][-1] for e in response.json()["detail"]] == [field]


HUGE = "99999999999999999999"  # past PostgreSQL's integer, and SQLite's


def test_out_of_range_values_are_422_naming_the_field(seeded_desk: tuple[str, dict[str, str], dict[str, int]]) -> None:
    """Ids, counts and offsets past an SQL integer, and times past what a datetime holds, are bad parameters
    (not a 500), named as the user sent them, on the API and on the pages (whose own checks read French)."""
    base, _env, _story = seeded_desk
    for path, params, field in [
        ("/api/stories", {"offset": HUGE}, "offset"),
        ("/api/stories", {"min_outlets": HUGE}, "min_outlets"),
        ("/api/stories", {"since": "0001-01-01"}, "since"),
        ("/api/stories", {"until": "9999-12-31"}, "until"),
        ("/api/stories", {"since": "99999999999d"}, "since"),
        (f"/api/stories/{HUGE}", {}, "story_id"),
        ("/api/search", {"q": "Meta", "offset": HUGE}, "offset"),
        (f"/api/feeds/{HUGE}/items", {}, "feed_id"),
    ]:
        response = httpx.get(base + path, params=params)
        assert response.status_code == 422, (path, params, response.text)
        assert [e["loc"][-1] for e in response.json()["detail"]] == [field], (path, params)
    for path, params, message in [
        ("/", {"offset": HUGE}, "offset : au plus 2147483647"),
        ("/", {"min_outlets": HUGE}, "min_outlets : au plus 2147483647"),
        ("/", {"min_outlets": "0"}, "min_outlets : au moins 1"),
        ("/", {"from": "0001-01-01"}, "from : '0001-01-01' is out of range"),
        ("/", {"to": "9999-12-31"}, "to : '9999-12-31' is out of range"),
        ("/", {"from": "2024-11-06", "to": "2024-11-01"}, "to : must be after the start of the period"),
        (f"/stories/{HUGE}", {}, "story_id : au plus 2147483647"),
        ("/search", {"q": "Meta", "offset": HUGE}, "offset : au plus 2147483647"),
        (f"/feeds/{HUGE}/items", {}, "feed_id : au plus 2147483647"),
    ]:
        response = httpx.get(base + path, params=params)
        assert response.status_code == 422, (path, params, response.text)
        assert f"Paramètre invalide — {message}" in html.unescape(response.text), (path, params)


def test_head_is_answered_as_get_without_a_body(seeded_desk: tuple[str, dict[str, str], dict[str, int]]) -> None:
    base, _env, story = seeded_desk
    for path in ("/api/stories", f"/api/stories/{story['000']}", "/", f"/stories/{story['000']}", "/static/style.css"):
        got, head = httpx.get(base + path), httpx.head(base + path)
        assert got.status_code == head.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"], path
        assert "default-src 'self'" in head.headers["content-security-policy"], path
    refused = httpx.post(f"{base}/api/stories")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"


def test_an_internal_error_keeps_the_security_headers(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a route is a 500 with the same headers as any answer, and its traceback in the log only; the
    desk served as the daemon serves it (on a thread), with the bug put in."""
    from monitor.web import WebServer

    assert run_cli("db", "upgrade", env={"MONITOR_DATABASE_URL": database_url}).returncode == 0

    def broken(_desk: Desk) -> list[object]:
        raise RuntimeError("the bug")

    monkeypatch.setattr(Desk, "feeds", broken)
    settings = Settings(database_url=database_url, feeds_file=tmp_path / "feeds.yaml", timezone="Europe/Paris")
    port = free_port()
    server = WebServer(settings, "127.0.0.1", port)
    server.start()
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: server.server.started, 30, 0.05)
        for path, kind in (("/api/feeds", "application/json"), ("/feeds", "text/html")):
            response = httpx.get(base + path)
            assert response.status_code == 500 and response.headers["content-type"].startswith(kind), path
            assert response.headers["content-security-policy"].startswith("default-src 'self'"), path
            assert response.headers["x-content-type-options"] == "nosniff", path
            assert "the bug" not in response.text and "Traceback" not in response.text, path
        page = httpx.get(f"{base}/feeds").text
        assert "Erreur 500" in page and "heures de Europe/Paris" in page
    finally:
        server.stop()
    assert "GET /api/feeds failed" in caplog.text and "RuntimeError: the bug" in caplog.text


def test_openapi_feeds_digests_and_read_only(seeded_desk: tuple[str, dict[str, str], dict[str, int]]) -> None:
    base, _env, _story = seeded_desk
    schema = httpx.get(f"{base}/openapi.json").json()
    assert {"/api/stories", "/api/stories/{story_id}", "/api/search", "/api/feeds", "/api/digests"} <= set(
        schema["paths"]
    )
    digests = httpx.get(f"{base}/api/digests").json()
    assert [d["name"] for d in digests["digests"]] == ["matin"] and digests["runs"] == []
    assert httpx.get(f"{base}/api/feeds").json() == []  # the import ran no feed
    assert "Aucun flux en base pour l'instant" in httpx.get(f"{base}/feeds").text
    for method in ("POST", "PUT", "DELETE"):
        response = httpx.request(method, f"{base}/api/stories")
        assert response.status_code == 405
        assert "default-src 'self'" in response.headers["content-security-policy"]


def test_feeds_show_pending_and_failed_items(seed_sites, database_url: str) -> None:  # type: ignore[no-untyped-def]
    """After a real `run --once` over the loopback outlets: every feed fetched, nothing stuck; a failed item
    put in the database shows with its reason."""
    feeds_file, _servers = seed_sites
    env = loopback_env(database_url, feeds_file, host_min_interval="0")
    result = run_cli("run", "--once", env=env)
    assert result.returncode == 0, result.stderr
    assert "0 items failed, 0 left pending" in result.stdout
    with connected(database_url, write=True) as db:
        db.execute(
            text("UPDATE feed_items SET state = 'failed', attempts = 5, last_error = 'http: 503' WHERE id = :id"),
            {"id": db.execute(text("SELECT min(id) FROM feed_items")).scalar()},
        )
    with serving(env) as base:
        feeds = httpx.get(f"{base}/api/feeds").json()
        assert len(feeds) == 6 and all(f["last_success_at"] and f["state"] == "ok" for f in feeds)
        failing = [f for f in feeds if f["failed_items"]]
        assert len(failing) == 1 and failing[0]["failed_items"] == 1
        assert sum(f["pending_items"] for f in feeds) == 0
        items = httpx.get(f"{base}/api/feeds/{failing[0]['id']}/items", params={"state": "failed"}).json()
        assert items["total"] == 1 and items["items"][0]["last_error"] == "http: 503"


def test_an_empty_database_says_how_stories_come(database_url: str, tmp_path: Path) -> None:
    env = {"MONITOR_DATABASE_URL": database_url, "MONITOR_FEEDS_FILE": str(tmp_path / "none.yaml")}
    with serving(env) as base:
        assert "Aucun sujet pour l'instant" in httpx.get(f"{base}/").text
        filtered = httpx.get(f"{base}/", params={"min_outlets": 2}).text
        assert "0 sujet correspond aux filtres" in filtered and "Aucun sujet pour l'instant" not in filtered


def test_token_is_required_on_every_route(tmp_path: Path) -> None:
    env = seed_database(f"sqlite:///{tmp_path}/monitor.db", tmp_path)
    token = "s3cret-jeton"
    with serving(env, token=token) as base:
        routes = ["/", "/stories/1", "/search?q=Meta", "/feeds", "/digests", "/static/style.css", "/openapi.json"]
        routes += ["/api/stories", "/api/stories/1", "/api/search?q=Meta", "/api/feeds", "/api/digests", "/nowhere"]
        basic = base64.b64encode(f"analyste:{token}".encode()).decode()
        wrong = base64.b64encode(b"analyste:nope").decode()
        for route in routes:
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {wrong}"}):
                response = httpx.get(base + route, headers=headers)
                assert response.status_code == 401, (route, headers)
                assert response.headers["www-authenticate"].startswith("Basic")
                assert "default-src 'self'" in response.headers["content-security-policy"]
            for headers in ({"Authorization": f"Bearer {token}"}, {"Authorization": f"Basic {basic}"}):
                response = httpx.get(base + route, headers=headers)
                assert response.status_code == (404 if route == "/nowhere" else 200), (route, response.text)
                assert "script-src 'self'" in response.headers["content-security-policy"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "monitor.example.fr"])
def test_non_loopback_host_is_refused_before_binding(tmp_path: Path, host: str) -> None:
    """Refused by the check that runs before any socket is opened (no database even needed)."""
    env = {**os.environ, "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path}/absent.db"}
    env.pop("MONITOR_WEB_TOKEN", None)
    result = run_cli("web", "--host", host, "--port", str(free_port()), env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("monitor: error: --host") and "MONITOR_WEB_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "absent.db").exists()


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path}/monitor.db"}
    assert run_cli("db", "upgrade", env=env).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("web", "--port", str(port), env=env)
        feeds = tmp_path / "feeds.yaml"
        feeds.write_text("feeds: []\n", encoding="utf-8")
        daemon = run_process(
            "run", env={**env, "MONITOR_FEEDS_FILE": str(feeds), "MONITOR_WEB_PORT": str(port)}, timeout=60
        )
    assert result.returncode == 2, result
    assert result.stderr == f"monitor: error: cannot serve on 127.0.0.1:{port}: Address already in use\n"
    assert daemon.returncode == 2 and daemon.stderr.endswith(result.stderr), daemon  # the desk `monitor run` starts


def test_the_desk_socket_does_not_wait_for_acks() -> None:
    """Accepted connections inherit TCP_NODELAY from the listening socket: without it every keep-alive
    response waited about 40 ms for the client's delayed ACK (uvicorn writes headers and body apart)."""
    from monitor.web.app import listen

    sock = listen("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        sock.close()


def test_missing_database_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path}/absent.db"}
    result = run_cli("web", "--port", str(free_port()), env=env)
    assert result.returncode == 2 and "no database at" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "absent.db").exists()  # opening it read-only did not create it


def test_the_daemon_serves_the_desk_when_its_port_is_set(tmp_path: Path) -> None:
    """MONITOR_WEB_PORT starts the desk inside `monitor run`, next to the scheduler; SIGTERM stops both."""
    from tests.support import running_daemon, wait_until

    database_url = f"sqlite:///{tmp_path}/desk.db"
    env = seed_database(database_url, tmp_path)
    port = free_port()
    env = {**env, "MONITOR_WEB_PORT": str(port), "MONITOR_POLL_SECONDS": "3600"}

    def answers() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/stories", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    with running_daemon(env) as daemon:
        assert wait_until(answers, 30, 0.2), "the daemon never served the desk"
        stories = httpx.get(f"http://127.0.0.1:{port}/api/stories", timeout=5).json()
    assert daemon.process.returncode == 0 and "Traceback" not in daemon.stderr, daemon.stderr
    assert stories["total"] == 3  # the seeds' two stories and the hostile one
