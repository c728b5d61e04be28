"""The error contract: every error a JSON ``{"detail": ...}`` (also the 404s and 405s BentoML's own
router would answer in plain text), and no exception escapes to the server, where uvicorn would log it
twice, answer a plain-text 500 and drop the kept-alive connection.

    install(app, page={"/": ["GET", "HEAD"]})   # after every route: its catch-all route must come last
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

log = logging.getLogger("bentoml.omni_tis")  # under "bentoml": its server logs it


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def send_json(send, status: int, detail: str) -> None:
    """A whole JSON response through a raw ASGI ``send``."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware, outermost in the app (inside BentoML's server): nothing a request does escapes
    as an exception. Uvicorn would log it twice with tracebacks, answer a plain-text 500 and drop the
    kept-alive connection; BentoML's metrics would count it as a 500.

    - a client that went away while its body was read (starlette's ClientDisconnect): one info line,
      and 499 (nginx's "client closed request") for the metrics; the client hears nothing;
    - anything else is a fault of this service: one traceback and a JSON 500, the connection kept."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        from starlette.requests import ClientDisconnect

        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:
            log.info("%s %s: the client went away before its request was read", scope["method"], scope["path"])
            if not started:
                await send_json(send, 499, "client closed the request")
        except Exception:
            log.exception("%s %s failed", scope["method"], scope["path"])
            if not started:
                await send_json(send, 500, "the service failed on this request (a bug; it is logged)")


def install(app: FastAPI, page: dict[str, list[str]]) -> None:
    """JSON for HTTPException, a JSON 404/405 for every path and method no route takes (``page``: the
    routes left out of the schema, path -> methods), and the Guard. Call after the last route."""
    app.add_exception_handler(HTTPException, http_error)

    # BentoML's own router would answer an unknown path with a plain-text 404.
    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                   include_in_schema=False)
    async def no_route(request: Request, path: str) -> JSONResponse:
        known = dict(page)
        known.update({p: sorted(m.upper() for m in ops) for p, ops in app.openapi()["paths"].items()})
        allowed = known.get("/" + path)
        if allowed:
            raise HTTPException(405, f"{request.method} is not allowed on /{path}; use {', '.join(allowed)}",
                                headers={"Allow": ", ".join(allowed)})
        api = ", ".join(f"{' '.join(m for m in ms if m != 'HEAD')} {p}" for p, ms in sorted(known.items()))
        raise HTTPException(404, f"no route /{path}; this service has {api} (schema at /openapi.json)")

    app.add_middleware(Guard)
