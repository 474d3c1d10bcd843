"""``/sessions`` bodies: create (client credentials or token exchange); byids and revoke
are ``common.ByIdsOnly``. Create is on the call path (a session per call): a flat model,
parsed with ``wire.parse`` on the body the endpoint decoded itself."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from fnhost.api.wire import WireModel
from fnhost.services.sessions import SessionRequest


class SessionWrite(WireModel):
    client_id: str | None = None
    client_secret: str | None = None
    token_exchange: bool = False
    oneshot_token_exchange: bool = False

    def request(self) -> SessionRequest:
        return SessionRequest(
            client_id=self.client_id,
            client_secret=self.client_secret,
            token_exchange=self.token_exchange,
            oneshot_token_exchange=self.oneshot_token_exchange,
        )


class SessionsCreate(WireModel):
    items: Annotated[list[SessionWrite], Field(min_length=1, max_length=1)]
