"""A digest as an e-mail's subject, plain text and HTML, from the shipped templates or the user's."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    TemplateError,
    TemplateSyntaxError,
    select_autoescape,
)

from monitor.digests.build import Digest
from monitor.errors import ConfigError
from monitor.text import MONTHS


def french_date(moment: datetime, zone: str, *, with_time: bool = True) -> str:
    local = moment.astimezone(ZoneInfo(zone))
    day = "1er" if local.day == 1 else str(local.day)
    text = f"{day} {MONTHS[local.month - 1]} {local.year}"
    return f"{text} à\u00a0{local:%H:%M}" if with_time else text  # keep "à 07:00" on one line


def _environment(templates_dir: Path | None) -> Environment:
    loaders = [FileSystemLoader(str(templates_dir))] if templates_dir else []
    env = Environment(
        loader=ChoiceLoader([*loaders, PackageLoader("monitor", "templates")]),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), disabled_extensions=("txt", "txt.j2")),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["french_date"] = french_date
    return env


def render(digest: Digest, templates_dir: Path | None = None) -> tuple[str, str, str]:
    """(subject, plain text, HTML) from the Jinja2 templates; a user directory overrides the shipped ones."""
    env = _environment(templates_dir)
    count = len(digest.stories)
    day = french_date(digest.end, digest.config.timezone, with_time=False)
    noun = "sujet" if count == 1 else "sujets"
    subject = (
        f"Veille « {digest.config.name} » du {day} : {count} {noun}"
        if count
        else f"Veille « {digest.config.name} » du {day} : rien de nouveau"
    )
    context = {"digest": digest, "subject": subject, "zone": digest.config.timezone, "day": day}
    rendered = []
    for name in ("digest.txt.j2", "digest.html.j2"):
        try:
            rendered.append(env.get_template(name).render(context))
        except TemplateError as e:  # a user's template (MONITOR_TEMPLATES_DIR) with a mistake in it
            line = f", line {e.lineno}" if isinstance(e, TemplateSyntaxError) else ""
            raise ConfigError(f"template {name} ({templates_dir or 'shipped'}){line}: {e.message}") from e
    text, html = rendered
    return subject, text, html
