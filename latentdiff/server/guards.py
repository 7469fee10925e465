"""What stands between the network and the queue: bearer-token auth (constant-time), a request
body limit, and errors as one-line JSON (4xx for the client's mistakes, never a stack trace)."""

from __future__ import annotations

import base64
import hmac
import json
import logging

from latentdiff.errors import LatentDiffError

log = logging.getLogger("latentdiff.server")
OPEN_PATHS = ("/", "/v1/health", "/docs", "/openapi.json", "/favicon.ico")


async def send_json(send, status: int, body: dict, headers: dict | None = None) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def token_matches(header: str, token: str) -> bool:
    """`Bearer T`, or HTTP Basic with password T (what A1111 clients send for --api-auth)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            value = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


class TokenAuth:
    """ASGI middleware: every path but the page, its static files, health and the OpenAPI docs needs the token."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not _is_open(scope["path"]):
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not token_matches(header, self.token):
                await send_json(
                    send,
                    401,
                    {"error": "missing or wrong token; send 'Authorization: Bearer TOKEN'"},
                    {"WWW-Authenticate": "Bearer"},
                )
                return
        await self.app(scope, receive, send)


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith("/static/")


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for a body over `limit` bytes, declared or streamed."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await send_json(send, 413, {"error": self._message()})
        seen, started = 0, False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await send_json(send, 413, {"error": self._message()})

    def _message(self) -> str:
        return f"request body larger than {self.limit} bytes (--max-body-mb)"


def install_error_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        return JSONResponse({"error": one_line(validation_line(exc.errors()))}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request, exc):
        return JSONResponse({"error": one_line(str(exc.detail))}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(LatentDiffError)
    async def _usage(request, exc):
        return JSONResponse({"error": one_line(str(exc))}, status_code=400 if exc.exit_code == 2 else 500)

    @app.exception_handler(Exception)
    async def _crash(request, exc):
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


def one_line(text: str, limit: int = 1000) -> str:
    """An error message as one line: characters that are not printable (a newline in a field name
    the client sent) escaped, and at most `limit` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validation_line(errors) -> str:
    parts = []
    for e in errors[:3]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)
