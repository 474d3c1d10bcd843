"""A gate that holds a function's call until the test opens it.

Calls run sandboxed (no file of the test's is visible to them), so the gate is a RAW row
that the call reads through its own ``client``: the handler loops on ``WAIT_AT_GATE`` until
the row ``open`` exists in the gate's table, and the test writes that row.
"""

from __future__ import annotations

import secrets
from typing import Any

from cognite.client import CogniteClient

# Pasted into handler sources; ``gate`` is ``Gate.data``.
WAIT_AT_GATE = '''
def wait_at_gate(client, gate, seconds=120):
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.raw.rows.retrieve(gate["db"], gate["table"], "open") is not None:
            return True
        time.sleep(0.05)
    return False
'''


class Gate:
    def __init__(self, client: CogniteClient) -> None:
        self.client = client
        self.db, self.table = f"gate-{secrets.token_hex(4)}", "gate"
        # the table exists from the start, so the call's reads find no row, not no table
        client.raw.rows.insert(self.db, self.table, {"closed": {"at": 0}}, ensure_parent=True)

    @property
    def data(self) -> dict[str, Any]:
        return {"db": self.db, "table": self.table}

    def open(self) -> None:
        self.client.raw.rows.insert(self.db, self.table, {"open": {"at": 1}})
