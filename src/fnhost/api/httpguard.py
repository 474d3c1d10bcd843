"""Slow clients: a deadline for a request's headers, which uvicorn does not have.

uvicorn closes idle keep-alive connections, but a client that connects and sends nothing,
or sends its headers a byte at a time, holds its connection (and a file descriptor) for
as long as it likes. This protocol gives each request ``header_timeout`` seconds from its
connection (or from its first byte, on a kept-alive connection) to finish its headers;
then it answers 408 and closes. Slow bodies are ``WireMiddleware``'s (an idle timeout
between chunks).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger("fnhost.api")


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps(
        {"error": {"code": 408, "message": f"The request's headers did not arrive within {seconds:g} seconds."}}
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    return head + body


def protocol_with_header_timeout(seconds: float) -> type[asyncio.Protocol] | str:
    """uvicorn's httptools protocol with the deadline (``"auto"`` when httptools is absent)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        log.warning("httptools is not installed: no deadline for slow request headers")
        return "auto"

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        header_timeout = seconds
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.write(_timeout_response(self.header_timeout))
                self.transport.close()

    return HeaderDeadlineProtocol
