"""The feed queue: feeds, the items seen in them, and leases that name their worker."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)

from monitor.limits import MAX_URL_CHARS
from monitor.storage.dialect import Unit, _chunks, _table
from monitor.storage.schema import Article, Feed, FeedItem, utcnow


class FeedQueue(Unit):
    """Feeds and their items as a work queue: configuration sync, items seen, leases with owners, retention."""

    def sync_feeds(self, configs: Sequence[Any]) -> None:
        """Make the feeds table match feeds.yaml, keeping fetch state of feeds that stay."""
        self.lock_cluster("feeds-sync")  # workers starting together take turns
        existing = {f.name: f for f in self.session.scalars(select(Feed))}
        by_url = {f.url: f for f in existing.values()}
        wanted = {c.name for c in configs}
        for config in configs:
            feed = existing.get(config.name) or by_url.get(config.url)
            if feed is None:
                feed = Feed(name=config.name, url=config.url, next_fetch_at=utcnow(), consecutive_failures=0)
                self.session.add(feed)
            feed.name, feed.url, feed.interval_s = config.name, config.url, config.interval_s
            feed.outlet = config.outlet
            feed.language, feed.tags, feed.robots, feed.in_config = (
                config.language,
                list(config.tags),
                config.robots,
                True,
            )
            if feed.enabled is None:
                feed.enabled = True
        for name, feed in existing.items():
            if name not in wanted and feed.url not in {c.url for c in configs}:
                feed.in_config = False
        self.session.flush()

    def feeds(self) -> list[Feed]:
        """The feeds of feeds.yaml (feeds removed from it keep their rows and history, marked not in_config)."""
        query = select(Feed).where(Feed.in_config.is_(True))
        return list(self.session.scalars(query.order_by(Feed.next_fetch_at, Feed.id)))

    def feed(self, feed_id: int) -> Feed:
        return self.session.get_one(Feed, feed_id)

    def record_items(self, feed_id: int, items: Sequence[Any], now: datetime) -> int:
        """Insert items not seen before in this feed; return how many were new.

        An item is its link: a GUID seen before with another link is another article, recorded under a key
        made of both. An item with an ``error`` (an unusable link) is recorded as failed, with the reason."""
        keys = [item.guid for item in items] + [_item_key(item.guid, item.url) for item in items]
        known: dict[str, str | None] = {}
        for chunk in _chunks(sorted(set(keys))):
            rows = self.session.execute(
                select(FeedItem.guid, FeedItem.url).where(FeedItem.feed_id == feed_id, FeedItem.guid.in_(chunk))
            )
            known.update({guid: url for guid, url in rows})
        fresh: list[tuple[str, Any]] = []
        for item in items:
            key = item.guid
            if key in known and known[key] != item.url:
                key = _item_key(item.guid, item.url)
            if key in known:
                continue
            known[key] = item.url
            fresh.append((key, item))
        self.session.add_all(
            FeedItem(
                feed_id=feed_id,
                guid=key,
                url=item.url,
                title=item.title,
                published_at=item.published_at,
                seen_at=now,
                state="failed" if item.error else "pending",
                attempts=1 if item.error else 0,
                last_error=item.error,
                next_attempt_at=now,
            )
            for key, item in fresh
        )
        return len(fresh)

    def claim_feeds(self, now: datetime, lease: timedelta, owner: str, *, only_due: bool) -> list[Feed]:
        """Lease feeds to this worker: due (or all, for --once), enabled, not leased by a live worker.

        On PostgreSQL rows another worker is claiming are skipped (FOR UPDATE SKIP LOCKED); a lease that
        expires (its worker died) makes the feed claimable again.
        """
        query = select(Feed).where(
            Feed.in_config.is_(True), Feed.enabled.is_(True), or_(Feed.lease_until.is_(None), Feed.lease_until < now)
        )
        if only_due:
            query = query.where(Feed.next_fetch_at <= now)
        feeds = list(
            self.session.scalars(query.order_by(Feed.next_fetch_at, Feed.id).with_for_update(skip_locked=True))
        )
        for feed in feeds:
            feed.lease_until, feed.lease_owner = now + lease, owner
        return feeds

    def held_feed(self, feed_id: int, owner: str) -> Feed | None:
        """The feed, locked for this transaction, if ``owner`` still holds its lease; None if another
        worker has taken it over (its result wins)."""
        return self.session.scalars(
            select(Feed).where(Feed.id == feed_id, Feed.lease_owner == owner).with_for_update()
        ).one_or_none()

    def feeds_leased(self, now: datetime) -> int:
        return int(self.session.scalar(select(func.count(Feed.id)).where(Feed.lease_until > now)) or 0)

    def claim_pending_items(
        self, now: datetime, lease: timedelta, owner: str, *, limit: int, max_attempts: int
    ) -> tuple[list[FeedItem], list[FeedItem]]:
        """Lease due pending items to this worker, as claim_feeds does for feeds; (claimed, given up).

        The attempt is counted here, when the work starts: an item whose handling kills its worker comes
        back when the lease expires, and stops, failed, after ``max_attempts`` like any other."""
        query = (
            select(FeedItem)
            .where(
                FeedItem.state == "pending",
                FeedItem.next_attempt_at <= now,
                or_(FeedItem.lease_until.is_(None), FeedItem.lease_until < now),
            )
            .order_by(FeedItem.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claimed: list[FeedItem] = []
        given_up: list[FeedItem] = []
        for item in self.session.scalars(query):
            if item.attempts >= max_attempts:
                item.state, item.lease_until, item.lease_owner = "failed", None, None
                item.last_error = f"gave up after {item.attempts} attempts, the last unfinished: {item.last_error}"
                given_up.append(item)
                continue
            item.attempts += 1
            item.lease_until, item.lease_owner = now + lease, owner
            claimed.append(item)
        return claimed, given_up

    def renew_leases(self, owner: str, until: datetime) -> None:
        """Extend what this live worker holds: only a dead worker's leases run out."""
        self.session.execute(
            update(Feed).where(Feed.lease_owner == owner, Feed.lease_until.is_not(None)).values(lease_until=until)
        )
        self.session.execute(
            update(FeedItem)
            .where(FeedItem.lease_owner == owner, FeedItem.state == "pending", FeedItem.lease_until.is_not(None))
            .values(lease_until=until)
        )

    def release_leases(self, owner: str | None = None) -> None:
        """Leases of ``owner`` (a worker stopping), or all of them (SQLite: a killed run's belong to nobody)."""
        for model in (Feed, FeedItem):
            query = update(model).where(model.lease_until.is_not(None))
            if owner is not None:
                query = query.where(model.lease_owner == owner)
            self.session.execute(query.values(lease_until=None, lease_owner=None))

    def finish_items(self, done: Sequence[tuple[int, int]], owner: str) -> None:
        """(item, article) pairs: these items are settled, their article stored; one statement. Only items
        ``owner`` still holds: another worker's result is never overwritten."""
        if done:
            table = _table(FeedItem)
            self.session.execute(
                table.update()
                .where(table.c.id == bindparam("item_id"), table.c.lease_owner == owner, table.c.state == "pending")
                .values(
                    state="done", article_id=bindparam("article"), last_error=None, lease_until=None, lease_owner=None
                ),
                [{"item_id": item, "article": article} for item, article in done],
            )

    def held_items(self, item_ids: Sequence[int], owner: str) -> list[FeedItem]:
        """Those of the items ``owner`` still holds, locked for this transaction."""
        return list(
            self.session.scalars(
                select(FeedItem)
                .where(FeedItem.id.in_(item_ids), FeedItem.lease_owner == owner, FeedItem.state == "pending")
                .order_by(FeedItem.id)
                .with_for_update()
            )
        )

    def prune(self, before: datetime) -> dict[str, int]:
        """Drop raw HTML of articles fetched before ``before`` and settled feed items seen before it."""
        html = self.session.execute(
            update(Article).where(Article.fetched_at < before, Article.raw_html.is_not(None)).values(raw_html=None)
        )
        items = self.session.execute(
            delete(FeedItem).where(FeedItem.seen_at < before, FeedItem.state.in_(["done", "failed"]))
        )
        return {"raw_html": int(getattr(html, "rowcount", 0)), "feed_items": int(getattr(items, "rowcount", 0))}


def _item_key(guid: str, url: str | None) -> str:
    """A feed item's key when its GUID was seen with another link: the GUID and a digest of the link."""
    return f"{guid[: MAX_URL_CHARS - 18]}#{hashlib.sha1((url or '').encode('utf-8')).hexdigest()[:16]}"
