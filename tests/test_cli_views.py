"""The read commands of the CLI (stories, story, search, feeds, items, OPML): output, counts, --json parsed back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from monitor.storage import Feed, FeedItem
from tests.support import run_cli


def _ok(*args: str, env: dict[str, str]) -> str:
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_stories_story_and_search(seeded_database: tuple[dict[str, str], dict[str, int]]) -> None:
    env, story = seeded_database
    out = _ok("stories", env=env)
    assert "3 stories match" in out and "Europe/Paris" in out
    one = _ok("stories", "--limit", "1", env=env)
    assert "3 stories match; showing 1 (--limit)" in one
    assert "1 story matches" in _ok("stories", "--min-outlets", "2", env=env)
    assert _ok("stories", "--min-outlets", "99", env=env) == "0 stories match\n"  # and no empty table
    page = json.loads(_ok("stories", "--json", "--since", "2024-11-01", "--until", "2024-11-30", env=env))
    assert page["total"] == 2 and page["items"][0]["id"] == story["000"] and page["items"][0]["outlet_count"] == 4

    detail = _ok("story", str(story["000"]), env=env)
    for seed in ("000", "001", "002", "003"):
        assert f"https://outlet-{seed}.example.fr/article" in detail
    assert "why: founded the story" in detail and "why: matched this story (score" in detail
    parsed = json.loads(_ok("story", str(story["000"]), "--json", env=env))
    assert len(parsed["articles"]) == 4 and all(a["story_id"] == story["000"] for a in parsed["articles"])

    found = json.loads(_ok("search", "militaires", "--limit", "1", "--json", env=env))
    assert len(found["items"]) == 1 and found["total"] >= 1
    listed = _ok("search", "militaires", env=env)
    assert f"{found['total']} stor" in listed
    block = listed.split(f"story {found['items'][0]['story']['id']}: ", 1)[1].splitlines()  # a block per story
    assert block[0] == found["items"][0]["story"]["title"] and "outlet" in block[1] and "MILITAIRE" in block[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "Meta OR Google"], "OR is not supported"),
        (["search", "Meta -Google"], "excluding words"),
        (["search", '"open source'], "unclosed quote"),
        (["stories", "--since", "hier"], "--since"),
        (["story", "999999"], "no story 999999"),
        (["items", "--feed", "Inconnu"], "no feed 'Inconnu'"),
        (["stories", "--since", "0001-01-01"], "--since: '0001-01-01' is out of range"),
        (["stories", "--until", "9999-12-31"], "--until: '9999-12-31' is out of range"),
        (["search", "Meta", "--since", "99999999999d"], "--since: '99999999999d' is out of range"),
        (["stories", "--since", "1d", "--until", "2d"], "--until: '2d' is not after --since '1d'"),
        (["stories", "--since", "1d", "--until", "1d"], "--until: '1d' is not after --since '1d'"),  # one clock
        (["search", "Meta", "--since", "2024-11-10", "--until", "2024-11-01"], "--until: '2024-11-01' is not after"),
        (["story", "99999999999999999999"], "STORY_ID: 99999999999999999999 is not between 1 and 2147483647"),
        (["stories", "--limit", "99999999999999999999"], "--limit: 99999999999999999999 is not between"),
        (["stories", "--min-outlets", "2147483648"], "--min-outlets: 2147483648 is not between"),
        (["items", "--limit", "99999999999999999999"], "--limit"),
    ],
)
def test_bad_input_is_one_line(
    seeded_database: tuple[dict[str, str], dict[str, int]], args: list[str], message: str
) -> None:
    env, _story = seeded_database
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("monitor: error:") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _import(env: dict[str, str], path: Path, lines: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    assert f"{len(lines)} articles added" in _ok("import", str(path), env=env)


def test_titles_sources_urls_and_reasons_print_verbatim(
    seeded_database: tuple[dict[str, str], dict[str, int]], tmp_path: Path
) -> None:
    """What the web wrote is shown as written: rich markup and :emoji: codes in it are text, never styles."""
    env, _story = seeded_database
    honey = "Le miel atteint un record de production cette année selon les apiculteurs, qui saluent une saison "
    boss = "Le PDG du groupe annonce son départ après dix ans à la tête de l'entreprise, une surprise pour le "
    _import(
        env,
        tmp_path / "markup.jsonl",
        [
            {
                "url": "https://miel.example.fr/[/]record",
                "title": "[/] Miel [bold]record",
                "text": honey + "exceptionnelle malgré la sécheresse du printemps.",
                "published_at": "2024-11-07T08:00:00+01:00",
                "source": "[red]Markup[/red]",
            },
            {
                "url": "https://pdg.example.fr/depart",
                "title": "[exclu] Le PDG :fire: s'en va",
                "text": boss + "marché qui attendait une annonce de résultats.",
                "published_at": "2024-11-07T09:00:00+01:00",
                "source": "Échos :smile:",
            },
        ],
    )
    engine = create_engine(env["MONITOR_DATABASE_URL"])
    with Session(engine) as session, session.begin():
        feed = Feed(name="[red]Flux[/red]", url="https://flux.example.fr/feed", interval_s=900)
        session.add(feed)
        session.flush()
        session.add(
            FeedItem(feed_id=feed.id, guid="miel", url="https://miel.example.fr/[/]page", last_error="[b]http[/b]: 503")
        )
    engine.dispose()

    listed = _ok("stories", env=env)
    for text in ("[/] Miel [bold]record", "1: [red]Markup[/red]", "[exclu] Le PDG :fire: s'en va", "Échos :smile:"):
        assert text in listed, listed
    assert "[/] Miel [bold]record" in _ok("search", "miel", env=env)
    items = _ok("items", "--pending", env=env)
    for text in ("[red]Flux[/red]", "https://miel.example.fr/[/]page", "[b]http[/b]: 503"):
        assert text in items, items


def _row(table: str, first_cell: str) -> tuple[int, list[str]]:
    """The table row whose first cell is ``first_cell``: how many lines it takes, and each cell's text."""
    rows = [line.split("│")[1:-1] for line in table.splitlines() if line.startswith("│")]
    start = next(i for i, cells in enumerate(rows) if cells[0].strip() == first_cell)
    end = start + 1
    while end < len(rows) and not rows[end][0].strip():
        end += 1
    return end - start, [" ".join(" ".join(column).split()) for column in zip(*rows[start:end], strict=True)]


def test_a_story_with_ten_outlets_keeps_to_a_few_lines_in_80_columns(
    seeded_database: tuple[dict[str, str], dict[str, int]], tmp_path: Path
) -> None:
    env, _story = seeded_database
    outlets = ["Numerama", "Frandroid", "01net", "Next", "Siècle Digital", "Clubic", "ZDNet", "Korben", "Les Echos"]
    text = (
        "La société Mistral AI annonce une levée de fonds de six cents millions d'euros auprès d'investisseurs "
        "européens et américains pour accélérer le développement de ses modèles de langage ouverts."
    )
    _import(
        env,
        tmp_path / "ten.jsonl",
        [
            {
                "url": f"https://media-{n}.example.fr/mistral",
                "title": "Mistral AI lève 600 millions d'euros",
                "text": text,
                "published_at": f"2024-11-08T0{n}:00:00+01:00",
                "source": source,
            }
            for n, source in enumerate([*outlets, "Le Monde"])
        ],
    )
    page = json.loads(_ok("stories", "--json", "--min-outlets", "10", env=env))
    assert page["total"] == 1 and len(page["items"][0]["outlets"]) == 10  # --json keeps them all
    table = _ok("stories", "--min-outlets", "10", env={**env, "COLUMNS": "80"})
    assert max(len(line) for line in table.splitlines()) <= 80
    height, cells = _row(table, str(page["items"][0]["id"]))
    assert height <= 3 and cells[3] == "10: 01net, Clubic +8", table


def test_limit_must_be_positive_and_version(tmp_path: Path) -> None:
    env = {"MONITOR_DATABASE_URL": f"sqlite:///{tmp_path}/none.db"}
    result = run_cli("stories", "--limit", "0", env=env)
    assert result.returncode == 2 and "--limit" in result.stderr
    assert run_cli("--version", env=env).stdout.startswith("monitor ")
    assert "stories" in run_cli("-h", env=env).stdout


def test_help_sums_each_command_up_in_one_line(tmp_path: Path) -> None:
    """`monitor -h` lists each command by the first paragraph of its docstring, line breaks kept: on a wide
    terminal every row of the list starts with a command's name."""
    env = {"MONITOR_DATABASE_URL": f"sqlite:///{tmp_path}/none.db", "COLUMNS": "200"}
    listing = run_cli("-h", env=env).stdout.split("Commands")[1]
    rows = [line for line in listing.splitlines() if line.startswith("│")]
    assert len(rows) >= 12 and all(re.match(r"│ [a-z]+ +\S", row) for row in rows), rows


def test_feeds_and_items_after_a_run(seed_sites, database_url: str) -> None:  # type: ignore[no-untyped-def]
    from tests.support import loopback_env

    feeds_file, _servers = seed_sites
    env = {**loopback_env(database_url, feeds_file, host_min_interval="0"), "COLUMNS": "250"}
    assert f"no feed in the database yet: `monitor run` adds those of {feeds_file}" in _ok("feeds", env=env)
    _ok("run", "--once", env=env)
    out = _ok("feeds", env=env)
    assert "Numerama" in out and " ago)" in out and "(in " in out, out
    assert "every 15 min" in out or "adaptive interval" in out, out
    rows = json.loads(_ok("feeds", "--json", env=env))
    assert len(rows) == 6 and all(r["pending_items"] == 0 and r["failed_items"] == 0 for r in rows)
    assert _ok("items", env=env) == "0 items pending or failed\n"  # and no empty table
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


def test_since_and_until_take_relative_times(database_url: str, tmp_path: Path) -> None:
    """`--since 6h`, `2d`, `7d` and `--until` count back from now: each keeps exactly the stories of
    that period (``recent_articles``: 5 to 2 hours, 30 hours, 4 days and 16 days ago), as `search --since` does."""
    from datetime import UTC, datetime

    from tests.support import query, recent_articles

    lines = recent_articles(datetime.now(UTC))
    env = {"MONITOR_DATABASE_URL": database_url, "COLUMNS": "200"}
    _import(env, tmp_path / "recent.jsonl", lines)
    stored = {row["url"]: row["story_id"] for row in query(database_url, "SELECT url, story_id FROM articles")}
    story = {line["story"]: stored[line["url"]] for line in lines}
    assert len(set(story.values())) == len(set(stored.values())) == 4
    today, yesterday, this_week, weeks_ago = (story[n] for n in ("today", "yesterday", "this_week", "weeks_ago"))

    def listed(*args: str) -> list[int]:
        return [s["id"] for s in json.loads(_ok("stories", "--json", *args, env=env))["items"]]

    assert listed("--since", "6h") == [today]
    assert listed("--since", "2d") == [today, yesterday]
    assert listed("--since", "7d") == [today, yesterday, this_week]  # the most outlets, then the most recent
    assert listed("--until", "6h") == [weeks_ago, yesterday, this_week]  # 004 and its copy: 2 outlets
    assert listed("--since", "2d", "--until", "6h") == [yesterday]
    assert listed("--since", "7d", "--until", "2d") == [this_week]
    found = json.loads(_ok("search", "Clegg", "--since", "2d", "--json", env=env))
    assert [hit["story"]["id"] for hit in found["items"]] == [today]  # 004 names him too, 16 days ago
    assert len(json.loads(_ok("search", "Clegg", "--json", env=env))["items"]) == 2
