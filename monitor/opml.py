"""OPML in and out of feeds.yaml: the feed list readers and other monitoring tools exchange."""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET  # writing only: reading untrusted OPML goes through defusedxml
from collections.abc import Sequence
from pathlib import Path

import yaml
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import parse as parse_xml

from monitor.config import FeedConfig, load_feeds
from monitor.errors import ConfigError


def read_opml(path: Path) -> tuple[list[dict[str, object]], list[str]]:
    """feeds.yaml entries for the OPML file's feeds (outlines with an xmlUrl), tagged with the folder they sit
    in and their ``category``; and one line per outline skipped, with why."""
    try:
        root = parse_xml(path, forbid_dtd=True).getroot()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    except (ET.ParseError, DefusedXmlException) as e:  # entities and DTDs are refused: no billion laughs
        raise ConfigError(f"{path} is not valid OPML: {e}") from e
    body = root.find("body")
    if root.tag != "opml" or body is None:
        raise ConfigError(f"{path} is not OPML: no <opml><body>")
    entries: list[dict[str, object]] = []
    skipped: list[str] = []
    names: set[str] = set()

    def walk(node: ET.Element, folder: str | None) -> None:
        for outline in node.findall("outline"):
            url = (outline.get("xmlUrl") or "").strip()
            title = " ".join((outline.get("title") or outline.get("text") or "").split())
            if not url:
                walk(outline, title or folder)
                continue
            if not url.startswith(("http://", "https://")):
                skipped.append(f"{title or url!r}: not an http(s) feed URL")
                continue
            name, n = title or url, 2
            while name in names:
                name, n = f"{title or url} ({n})", n + 1
            names.add(name)
            categories = [c.strip().strip("/") for c in (outline.get("category") or "").split(",")]
            tags = sorted({t for t in [folder, *categories] if t})
            entries.append({"name": name, "url": url, **({"tags": tags} if tags else {})})

    walk(body, None)
    return entries, skipped


def entries_yaml(entries: Sequence[dict[str, object]]) -> str:
    """Entries as items of a ``feeds:`` list (indented to paste under it)."""
    text = yaml.safe_dump(list(entries), allow_unicode=True, sort_keys=False, default_flow_style=None, width=200)
    return "".join(f"  {line}\n" for line in text.splitlines())


def append_feeds(feeds_file: Path, entries: Sequence[dict[str, object]]) -> tuple[int, int]:
    """Append the entries whose name and URL are both new to feeds.yaml, after checking the whole file as
    `monitor run` would; (added, already there). Nothing is written if the result would not load."""
    existing = load_feeds(feeds_file)
    names, urls = {f.name for f in existing}, {f.url for f in existing}
    new = [e for e in entries if e["name"] not in names and e["url"] not in urls]
    text = feeds_file.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    if new and isinstance(raw, dict) and list(raw)[-1] != "feeds":
        raise ConfigError(f"{feeds_file}: 'feeds:' is not the last section; print the entries and paste them")
    combined = text.rstrip("\n") + "\n" + entries_yaml(new) if new else text
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", encoding="utf-8", delete=False) as check:
        check.write(combined)
    try:
        load_feeds(Path(check.name))
    finally:
        Path(check.name).unlink()
    if new:
        feeds_file.write_text(combined, encoding="utf-8")
    return len(new), len(entries) - len(new)


def write_opml(feeds: Sequence[FeedConfig]) -> str:
    """OPML 2.0 listing the feeds, each with its tags as ``category``."""
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = "monitor feeds"
    body = ET.SubElement(root, "body")
    for feed in feeds:
        attributes = {"type": "rss", "text": feed.name, "title": feed.name, "xmlUrl": feed.url}
        if feed.tags:
            attributes["category"] = ",".join(feed.tags)
        ET.SubElement(body, "outline", attributes)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
