"""Times as a French reader wants them: local, and relative (« dans 12 min », « il y a 3 h »)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

DAYS_A_YEAR = 365.25


def local(moment: datetime | None, zone: str) -> str:
    """A stored UTC time on the analyst's wall clock."""
    return "" if moment is None else f"{moment.astimezone(ZoneInfo(zone)):%d/%m/%Y %H:%M}"


def duration(seconds: float, *, french: bool = True) -> str:
    """12 min, 3 h, 2 j, 5 mois, 18 ans: the coarsest unit that still says something."""
    seconds = abs(seconds)
    days = seconds / 86400
    if seconds < 60:
        return "moins d'1 min" if french else "under 1 min"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 48 * 3600:
        return f"{int(seconds // 3600)} h"
    if days < 2 * DAYS_A_YEAR / 12:  # months from two on: "1 mois" would say half of it
        return f"{int(days)} {'j' if french else 'd'}"
    if days < 2 * DAYS_A_YEAR:
        months = int(days // (DAYS_A_YEAR / 12))
        return f"{months} mois" if french else f"{months} months"
    years = int(days // DAYS_A_YEAR)
    return f"{years} ans" if french else f"{years} years"


def relative(moment: datetime | None, now: datetime, *, french: bool = True) -> str:
    """French "dans 12 min", "il y a 3 h", or English "in 12 min", "3 h ago"."""
    if moment is None:
        return "jamais" if french else "never"
    delta = (moment - now).total_seconds()
    span = duration(delta, french=french)
    if delta >= 0:
        return f"dans {span}" if french else f"in {span}"
    return f"il y a {span}" if french else f"{span} ago"
