"""The daemon: ``service`` starts and schedules; each ``worker`` polls feeds and ingests their items
under leases; ``policy`` says when a feed is due again."""
