"""Digest runs: at most once per period, retried with backoff, every state recorded in digest_runs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from monitor.config import DigestConfig, FeedConfig, Settings
from monitor.digests.build import build
from monitor.digests.deliver import message, send_mail
from monitor.digests.periods import period_start
from monitor.errors import DeliveryError
from monitor.search import fold_name
from monitor.storage import Storage

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5


RETRY_BASE = timedelta(minutes=2)


STALE_SENDING = timedelta(minutes=15)


def warn_unknown_outlets(digests: Sequence[DigestConfig], feeds: Sequence[FeedConfig]) -> list[str]:
    """Log a warning for each digest outlet no feed credits its articles to (accents and case aside), and
    return them: a typo would silently filter everything out; imported archives may still have it."""
    known = {fold_name(feed.outlet) for feed in feeds}
    unknown = []
    for digest in digests:
        for outlet in digest.outlets:
            if fold_name(outlet) not in known:
                log.warning("digest %r, field 'outlets': no feed has the outlet %r", digest.name, outlet)
                unknown.append(outlet)
    return unknown


class Digester:
    def __init__(self, settings: Settings, storage: Storage, digests: Sequence[DigestConfig]) -> None:
        self.settings = settings
        self.storage = storage
        self.digests = {d.name: d for d in digests}

    def run(self, name: str, end: datetime) -> str:
        """Record the run for the period ending at ``end`` (once), then send it if this worker wins the claim.
        Returns its state."""
        config = self.digests[name]
        with self.storage.repository() as repo:
            run = repo.record_digest_run(name, period_start(config, end), end)
        return self._attempt(run.id)

    def retry_due(self) -> None:
        """Retry runs that could not be built or delivered, and report runs a crash left half-sent."""
        now = datetime.now(UTC)
        with self.storage.repository() as repo:
            for run in repo.digest_runs(states=["sending"]):
                if run.claimed_at and now - run.claimed_at > STALE_SENDING:
                    run.state = "failed"
                    run.last_error = (
                        "interrupted during delivery (worker stopped); not resent automatically "
                        "so nobody gets it twice: check the mail server's log"
                    )
                    log.error("digest %s for %s: %s", run.digest, run.period_end, run.last_error)
            pending = [r.id for r in repo.digest_runs(states=["pending"]) if r.next_attempt_at <= now]
        for run_id in pending:
            self._attempt(run_id)

    def _attempt(self, run_id: int) -> str:
        now = datetime.now(UTC)
        with self.storage.repository() as repo:
            run = repo.digest_run(run_id)
            config = self.digests.get(run.digest)
            if config is None or not repo.claim_digest_run(run_id, now):
                return run.state
            start, end = run.period_start, run.period_end
        state, error, message_id, story_count = "sent", None, None, None
        try:
            digest = build(self.storage, config, end, start)
            story_count = len(digest.stories)
            msg = message(digest, self.settings, run_id) if digest.stories or config.send_empty else None
        except Exception as e:  # nothing has left yet, so any failure (a user's template too) is safe to retry
            state, error = "pending", f"building the digest failed: {type(e).__name__}: {e}"
        else:
            if msg is None:
                state = "empty"
            else:
                message_id = msg["Message-ID"]
                try:
                    send_mail(msg, self.settings, config.name)
                except DeliveryError as e:
                    state, error = "pending", str(e)
        with self.storage.repository() as repo:
            run = repo.digest_run(run_id)
            run.story_count, run.last_error = story_count, error
            if state == "pending":
                if run.attempts >= MAX_ATTEMPTS:
                    state = "failed"
                    log.error(
                        "digest %s for %s..%s given up after %d tries: %s", config.name, start, end, run.attempts, error
                    )
                else:
                    run.next_attempt_at = now + RETRY_BASE * 2 ** (run.attempts - 1)
                    log.warning("digest %s: not sent, retrying at %s: %s", config.name, run.next_attempt_at, error)
            run.state = state
            if state == "sent":
                run.message_id, run.sent_at = message_id, datetime.now(UTC)
                repo.record_digest_stories(run_id, [story.id for story in digest.stories])
        return state
