"""The analyst's desk: read-only HTML pages and a JSON API over what the pipeline stored.

Safe by default: the database is opened read-only, every response carries a Content-Security-Policy that
allows no inline script, templates escape everything they show, and with ``MONITOR_WEB_TOKEN`` set every
request must present it (Bearer token, or HTTP basic password). Off loopback the token is required:
``monitor web`` refuses to start without it (``check_bind``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from monitor.config import Settings
from monitor.desk.read import Desk
from monitor.errors import ConfigError, MonitorError

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    """Only a literal loopback address or ``localhost``: any other name may resolve anywhere."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: Settings) -> None:
    """Refuse, before any socket is opened, to serve off loopback without a token."""
    if not is_loopback(host) and settings.web_token is None:
        raise ConfigError(
            f"--host {host} is reachable from other machines: set MONITOR_WEB_TOKEN to require a token, "
            "or serve on 127.0.0.1"
        )


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before uvicorn starts: a port in use is one line, not uvicorn's log and exit 3."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by every accepted connection. Without it, a keep-alive client waits for its delayed ACK
    # (about 40 ms) before each response's body: uvicorn writes the headers and the body apart.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        shown = f"[{host}]" if ":" in host else host
        raise ConfigError(f"cannot serve on {shown}:{port}: {e.strerror or e}") from e
    return sock


class HeadAsGet:
    """HEAD answered as GET, as the Allow header says: FastAPI routes GET only, and the server (which still
    sees HEAD) sends the headers without the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


# The pages' own checks in French; the desk's messages (times, queries), shared with the CLI, stay English.
_CHECKS = {
    "int_parsing": "nombre entier attendu",
    "greater_than_equal": "au moins {ge}",
    "less_than_equal": "au plus {le}",
    "string_pattern_mismatch": "valeur non reconnue",
}


def _french(error: Any) -> str:
    template = _CHECKS.get(str(error.get("type")))
    return template.format(**error.get("ctx", {})) if template else str(error.get("msg", ""))


def _authorized(header: str, token: bytes) -> bool:
    """A Bearer token, or an HTTP basic password (any user name), equal to the token in constant time."""
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.encode(), token)
    if scheme.lower() == "basic":
        try:
            _user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(password.encode(), token)
    return False


def create_app(settings: Settings, desk: Desk | None = None) -> FastAPI:
    """The application; ``desk`` is opened from the settings unless given."""
    from monitor.web.api import router as api_router
    from monitor.web.pages import router as pages_router
    from monitor.web.pages import templates

    app = FastAPI(
        title="monitor — le bureau de l'analyste",
        description="Read-only access to stories, articles, feeds and digests. Times are ISO 8601 with offset.",
        version="1",
        docs_url=None,  # the interactive docs load scripts from a CDN; the schema is at /openapi.json
        redoc_url=None,
    )
    app.state.desk = desk or Desk(settings.database_url, timezone=settings.timezone)
    app.state.settings = settings
    token = settings.web_token.get_secret_value().encode() if settings.web_token else None

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if token is not None and not _authorized(request.headers.get("authorization", ""), token):
            response: Response = PlainTextResponse(
                "Jeton requis (MONITOR_WEB_TOKEN) : en-tête Authorization Bearer, ou mot de passe HTTP basic.",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="monitor", charset="UTF-8"'},
            )
        elif request.method not in ("GET", "HEAD"):
            response = PlainTextResponse("Lecture seule.", status_code=405, headers={"Allow": "GET, HEAD"})
        else:
            try:
                response = await call_next(request)
            except Exception:  # a bug: logged with its traceback, answered as a 500 that keeps the headers below
                log.exception("%s %s failed", request.method, request.url.path)
                response = failed(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    def failed(request: Request) -> Response:
        if wants_json(request):
            return JSONResponse({"detail": "internal error (see the server's log)"}, status_code=500)
        return _error_page(request, 500, "Erreur interne : le détail est dans le journal du serveur.")

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/") or request.url.path == "/openapi.json"

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        if wants_json(request):
            return JSONResponse({"detail": errors}, status_code=422)
        message = "; ".join(f"{e['loc'][-1]} : {_french(e)}" for e in exc.errors() if e.get("loc"))
        return _error_page(request, 422, f"Paramètre invalide — {message}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if wants_json(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        message = "Page introuvable." if exc.detail == "Not Found" else str(exc.detail)  # Starlette's unknown route
        return _error_page(request, exc.status_code, message)

    @app.exception_handler(MonitorError)
    async def monitor_error(request: Request, exc: MonitorError) -> Response:
        """A database that went away, say: one line, never a traceback."""
        if wants_json(request):
            return JSONResponse({"detail": " ".join(str(exc).split())}, status_code=503)
        return _error_page(request, 503, " ".join(str(exc).split()))

    def _error_page(request: Request, status: int, message: str) -> Response:
        context = {"status": status, "message": message, "zone": app.state.desk.timezone}
        return templates.TemplateResponse(request, "error.html.j2", context, status_code=status)

    app.include_router(api_router)
    app.include_router(pages_router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(HeadAsGet)  # outside the guard, which then sees GET
    return app


def now() -> datetime:
    return datetime.now(UTC)


def field_error(name: str, message: str, where: str = "query") -> RequestValidationError:
    """A 422 that names the parameter, in FastAPI's own shape."""
    error: dict[str, Any] = {"loc": (where, name), "msg": message, "type": "value_error", "input": None}
    return RequestValidationError([error])


class WebServer:
    """The desk inside the daemon (MONITOR_WEB_PORT): uvicorn on a thread of its own, like the health
    endpoint, so the daemon's own signal handling and event loop stay as they are."""

    def __init__(self, settings: Settings, host: str, port: int) -> None:
        import uvicorn

        check_bind(host, settings)  # before anything listens
        sock = listen(host, port)  # a port in use stops the start in one line
        self.desk = Desk(settings.database_url, timezone=settings.timezone)
        config = uvicorn.Config(create_app(settings, self.desk), log_level="warning", server_header=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, name="web", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.desk.close()
