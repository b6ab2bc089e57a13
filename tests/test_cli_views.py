"""The read commands of the CLI (stories, story, search, feeds, items, OPML): output, counts, --json parsed back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support import run_cli, seed_database, stories_of


@pytest.fixture
def seeded(database_url: str, tmp_path: Path) -> tuple[dict[str, str], dict[str, int]]:
    env = seed_database(database_url, tmp_path)
    return env, stories_of(database_url)


def _ok(*args: str, env: dict[str, str]) -> str:
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_stories_story_and_search(seeded: tuple[dict[str, str], dict[str, int]]) -> None:
    env, story = seeded
    out = _ok("stories", env=env)
    assert "3 stories match" in out and "Europe/Paris" in out
    one = _ok("stories", "--limit", "1", env=env)
    assert "3 stories match; showing 1 (--limit)" in one
    assert "1 story matches" in _ok("stories", "--min-outlets", "2", env=env)
    page = json.loads(_ok("stories", "--json", "--since", "2024-11-01", "--until", "2024-11-30", env=env))
    assert page["total"] == 2 and page["items"][0]["id"] == story["000"] and page["items"][0]["outlet_count"] == 4

    detail = _ok("story", str(story["000"]), env=env)
    for seed in ("000", "001", "002", "003"):
        assert f"https://outlet-{seed}.example.fr/article" in detail
    assert "why: founded the story" in detail and "why: matched story" in detail
    parsed = json.loads(_ok("story", str(story["000"]), "--json", env=env))
    assert len(parsed["articles"]) == 4 and all(a["story_id"] == story["000"] for a in parsed["articles"])

    found = json.loads(_ok("search", "militaires", "--limit", "1", "--json", env=env))
    assert len(found["items"]) == 1 and found["total"] >= 1
    assert f"{found['total']} stor" in _ok("search", "militaires", env=env)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "Meta OR Google"], "OR is not supported"),
        (["search", "Meta -Google"], "excluding words"),
        (["search", '"open source'], "unclosed quote"),
        (["stories", "--since", "hier"], "--since"),
        (["story", "999999"], "no story 999999"),
        (["items", "--feed", "Inconnu"], "no feed 'Inconnu'"),
    ],
)
def test_bad_input_is_one_line(seeded: tuple[dict[str, str], dict[str, int]], args: list[str], message: str) -> None:
    env, _story = seeded
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("monitor: error:") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_limit_must_be_positive_and_version(tmp_path: Path) -> None:
    env = {"MONITOR_DATABASE_URL": f"sqlite:///{tmp_path}/none.db"}
    result = run_cli("stories", "--limit", "0", env=env)
    assert result.returncode == 2 and "--limit" in result.stderr
    assert run_cli("--version", env=env).stdout.startswith("monitor ")
    assert "stories" in run_cli("-h", env=env).stdout


def test_feeds_and_items_after_a_run(seed_sites, database_url: str) -> None:  # type: ignore[no-untyped-def]
    from tests.support import loopback_env

    feeds_file, _servers = seed_sites
    env = {**loopback_env(database_url, feeds_file, host_min_interval="0"), "COLUMNS": "250"}
    _ok("run", "--once", env=env)
    out = _ok("feeds", env=env)
    assert "Numerama" in out and " ago)" in out and "(in " in out, out
    assert "every 15 min" in out or "adaptive interval" in out, out
    rows = json.loads(_ok("feeds", "--json", env=env))
    assert len(rows) == 6 and all(r["pending_items"] == 0 and r["failed_items"] == 0 for r in rows)
    assert "0 items pending or failed" in _ok("items", env=env)
    items = json.loads(_ok("items", "--failed", "--feed", "numerama", "--json", env=env))
    assert items["total"] == 0 and items["items"] == []


def test_opml_round_trip(tmp_path: Path) -> None:
    opml = tmp_path / "reader.opml"
    opml.write_text(
        """<?xml version="1.0"?><opml version="2.0"><head/><body>
        <outline text="Tech"><outline text="Numerama" xmlUrl="https://www.numerama.com/feed/"/>
        <outline text="Next" xmlUrl="https://next.ink/feed/" category="/presse"/></outline>
        <outline text="Local" xmlUrl="file:///etc/passwd"/></body></opml>""",
        encoding="utf-8",
    )
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text("feeds:\n  - {name: Numerama, url: 'https://www.numerama.com/feed/'}\n", encoding="utf-8")
    env = {"MONITOR_FEEDS_FILE": str(feeds)}
    printed = run_cli("feeds", "import-opml", str(opml), env=env)
    assert printed.returncode == 0 and "'Local': not an http(s) feed URL" in printed.stderr
    entries = yaml.safe_load("feeds:\n" + printed.stdout)["feeds"]
    assert entries == [
        {"name": "Numerama", "url": "https://www.numerama.com/feed/", "tags": ["Tech"]},
        {"name": "Next", "url": "https://next.ink/feed/", "tags": ["Tech", "presse"]},
    ]
    appended = run_cli("feeds", "import-opml", str(opml), "--append", env=env)
    assert "1 feed added" in appended.stdout and "1 already there" in appended.stdout, appended.stderr
    exported = run_cli("feeds", "export-opml", env=env)
    assert exported.returncode == 0
    assert 'xmlUrl="https://next.ink/feed/"' in exported.stdout and 'category="Tech,presse"' in exported.stdout


def test_an_opml_file_with_entities_is_refused_in_one_line(tmp_path: Path) -> None:
    """OPML comes from anywhere: a DTD with nested entities (billion laughs) is refused before expansion."""
    bomb = tmp_path / "bomb.opml"
    entities = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    bomb.write_text(
        f'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY l0 "lol">{entities}]>'
        '<opml version="2.0"><head/><body><outline text="&l9;" xmlUrl="https://a.example.fr/feed"/></body></opml>',
        encoding="utf-8",
    )
    done = run_cli("feeds", "import-opml", str(bomb), env={})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "is not valid OPML" in done.stderr, done.stderr
