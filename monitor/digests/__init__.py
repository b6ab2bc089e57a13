"""Digests: the period's stories by e-mail. ``periods`` names the period, ``build`` selects and ranks,
``render`` writes the e-mail, ``deliver`` hands it to SMTP, and ``runs`` keeps it to once per period."""
