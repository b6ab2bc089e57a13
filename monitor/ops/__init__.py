"""Operating the service: ``metrics``, the ``health`` endpoint, ``logs`` and ``retention``."""
