"""Request body size cap: 413 before a large body reaches a route.

Pure ASGI. A declared ``Content-Length`` over the cap is refused at once. A body without
one (chunked) is read here up to the cap and handed on from memory; crossing the cap is a
413. Reading ahead, rather than failing mid-stream, matters because FastAPI turns any
error raised while it reads a body into a generic 400.

File uploads (``POST`` to an issue's attachments) have a cap of their own and are never read
ahead into memory: their bytes are counted as the route reads them, and crossing the cap
raises an HTTP 413 exception, the one kind FastAPI lets through from reading a body.
"""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flyswatter.errors import PayloadTooLarge, problem_response_for
from flyswatter.http.asgi import HttpMiddleware
from flyswatter.http.headers import API_PREFIX

UPLOAD_PATH = re.compile("^" + re.escape(API_PREFIX) + r"/issues/[^/]+/attachments$")
# A multipart body frames the file with a boundary and part headers: room for those.
MULTIPART_FRAMING_BYTES = 64 * 1024


class BodySizeLimitMiddleware(HttpMiddleware):
    def __init__(self, app: ASGIApp, max_bytes: int, upload_max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes
        self.upload_max_bytes = upload_max_bytes + MULTIPART_FRAMING_BYTES

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = self._declared_length(scope)
        if scope["method"] == "POST" and UPLOAD_PATH.match(scope["path"]):
            if declared is not None and (declared < 0 or declared > self.upload_max_bytes):
                await self._refuse(scope, receive, send, self.upload_max_bytes)
                return
            await self.app(scope, self._counted(receive), send)
            return
        if declared is not None:
            if declared < 0 or declared > self.max_bytes:
                await self._refuse(scope, receive, send, self.max_bytes)
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; let the app see the same
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, self.max_bytes)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _counted(self, receive: Receive) -> Receive:
        """``receive``, raising 413 once the body has grown past the upload cap."""
        size = 0

        async def counting() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.upload_max_bytes:
                    raise HTTPException(
                        413,
                        f"uploads are limited to {self.upload_max_bytes} bytes",
                        headers={"Connection": "close"},
                    )
            return message

        return counting

    @staticmethod
    def _declared_length(scope: Scope) -> int | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return -1
        return None

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        too_large = PayloadTooLarge(
            f"request bodies are limited to {limit} bytes", headers={"Connection": "close"}
        )
        response = problem_response_for(Request(scope), too_large)
        await response(scope, receive, send)
