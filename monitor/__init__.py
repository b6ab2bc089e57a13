"""monitor: French tech-news feeds in, stories out, stored in SQL.

Data flow, one module per stage: config → fetching → extraction → text → dedup → stories
→ storage, driven by ingest (shared by the daemon in scheduling and by importing), with
the CLI on top.
"""

__version__ = "0.1.0"
