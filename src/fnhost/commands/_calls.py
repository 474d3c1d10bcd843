"""Waiting for a call and showing its outcome (shared by ``call`` and ``logs``)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from fnhost.commands._common import (
    FAILED,
    Connection,
    check,
    console,
    emit_json,
    err_console,
    fail,
    ms_to_text,
)

if TYPE_CHECKING:
    from rich.console import Console


def wait(conn: Connection, function_id: int, call_id: int, timeout: float) -> Any:
    """Until the call is no longer Running.

    Uses fnhost's long-poll (``POST …/calls/{id}/wait?waitSeconds=``), which answers as soon
    as the call ends; a server without it is polled through the SDK instead.
    """
    deadline = time.monotonic() + timeout
    path = f"/functions/{function_id}/calls/{call_id}/wait"
    with conn.http(timeout=90) as http:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                fail(f"Call {call_id} still Running after {timeout:.0f}s.", FAILED)
            r = http.post(path, params={"waitSeconds": min(30.0, remaining)})
            if r.status_code == 404 and "no such endpoint" in r.text:
                return _poll(conn, function_id, call_id, deadline, timeout)
            item = check(r).json()
            if item["status"] != "Running":
                return conn.client.functions.calls.retrieve(call_id=call_id, function_id=function_id)


def _poll(conn: Connection, function_id: int, call_id: int, deadline: float, timeout: float) -> Any:
    delay = 0.05
    while True:
        c = conn.client.functions.calls.retrieve(call_id=call_id, function_id=function_id)
        if c is None:
            fail(f"Call {call_id} disappeared (was its function deleted?).", FAILED)
        if c.status != "Running":
            return c
        if time.monotonic() > deadline:
            fail(f"Call {call_id} still Running after {timeout:.0f}s.", FAILED)
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def result(conn: Connection, function_id: int, c: Any) -> dict[str, Any]:
    calls = conn.client.functions.calls
    response = calls.get_response(call_id=c.id, function_id=function_id) if c.status == "Completed" else None
    logs = calls.get_logs(call_id=c.id, function_id=function_id)
    return {**c.dump(camel_case=True), "response": response, "logs": [entry.dump(camel_case=True) for entry in logs]}


def print_log_line(entry: dict[str, Any], out: Console = console) -> None:
    """One log line with its time. ``out`` is stderr where stdout carries a response."""
    stamp = ms_to_text(entry.get("timestamp"))
    out.print(f"[dim]{stamp}[/dim] {_escape(entry.get('message', ''))}", highlight=False, soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def print_result(res: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(res)
        return
    status = res["status"]
    color = "green" if status == "Completed" else "red"
    took = ""
    if res.get("endTime") and res.get("startTime"):
        took = f" in {(res['endTime'] - res['startTime']) / 1000:.2f}s"
    err_console.print(
        f"Call {res['id']} of function {res['functionId']}: [{color}]{status}[/{color}]{took}", highlight=False
    )
    if res["logs"]:
        err_console.print("[bold]logs[/bold]")
        for entry in res["logs"]:
            print_log_line(entry, err_console)  # stdout is for the response alone
    if status == "Completed":
        err_console.print("[bold]response[/bold]")
        print(json.dumps(res["response"], indent=2))
    elif res.get("error"):
        error = res["error"]
        message = error.get("message") if isinstance(error, dict) else str(error)
        err_console.print(f"[red]error[/red]: {_escape(str(message))}", highlight=False)
        trace = error.get("trace") if isinstance(error, dict) else None
        if trace:
            err_console.print(trace, markup=False, highlight=False)
