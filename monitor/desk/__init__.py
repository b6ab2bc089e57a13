"""The analyst's desk's read model, shared by the web pages, the JSON API and the CLI: ``params`` (what is
asked), ``read`` (the read-only queries), ``rows`` (what comes back), ``snippets`` and ``times``."""
