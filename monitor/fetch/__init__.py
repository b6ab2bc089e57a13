"""Fetching: untrusted addresses and bytes from the network, turned into feed items and article pages.

- ``urls``: canonical article URLs, refusing what cannot name an article;
- ``guard``: which addresses may be connected to, checked at resolution and at connect time;
- ``politeness``: the per-host budget, and what servers ask of us;
- ``client``: ``Fetcher``, the one HTTP client, bounded in time and size;
- ``robots``: robots.txt per host;
- ``feeds``: RSS and Atom bodies into feed entries.
"""
