"""monitor: French tech-news feeds in, stories out, stored in SQL.

Data flow, one folder per concern: fetch (feeds and pages) → pipeline (extraction, then grouping:
near-copies and stories) → storage (the SQL contract), driven by the daemon or by an import, with
digests, search and ops reading what is stored, and the CLI on top.
"""

__version__ = "0.1.0"
