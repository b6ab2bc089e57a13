"""The analyst's desk (`monitor web`): read-only pages and JSON API."""

from monitor.web.app import WebServer, check_bind, create_app, is_loopback

__all__ = ["WebServer", "check_bind", "create_app", "is_loopback"]
