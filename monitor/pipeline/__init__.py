"""The pipeline: the one path every article takes, fetched or imported.

``prepare`` (extraction, identity, signature, term counts: CPU only) → ``placement`` (near-copy, story,
store: one transaction under the cluster-wide lock) ; ``importing`` feeds archives through the same path.
"""
