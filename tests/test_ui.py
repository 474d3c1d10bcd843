"""The web page, driven in a real browser: Debian's chromium through Playwright.

A person signs in, uploads a zip by the file chooser, watches the deployment become
Ready, calls the function with data and reads its response and logs, creates and deletes
a schedule, and finds a failed call on the failed-calls page. Bad input (invalid JSON, a
file that is not a zip, an invalid cron expression, an expired sign-in) gets a message
next to the field and keeps what was typed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.browser import (
    BROKEN_HANDLER,
    CALL_TIMEOUT_MS,
    DEPLOY_TIMEOUT_MS,
    HANDLER,
    call,
    deployed,
    launch,
    make_zip,
    sign_in,
    upload,
)
from tests.gate import Gate
from tests.live import LiveServer


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = launch(playwright)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def ui_creds(server: LiveServer) -> dict[str, Any]:
    return server.create_client("ui-tests")


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext, server: LiveServer, ui_creds: dict[str, Any]) -> Page:
    page = context.new_page()
    sign_in(page, server.base_url, ui_creds)
    return page


# -- sign in -------------------------------------------------------------------------------------
def test_root_redirects_to_sign_in(context: BrowserContext, server: LiveServer) -> None:
    page = context.new_page()
    page.goto(server.base_url + "/")
    expect(page).to_have_url(f"{server.base_url}/ui/signin?next=%2Fui%2F")
    expect(page.locator("h1")).to_have_text("Sign in to fnhost")


def test_sign_in_with_wrong_secret_keeps_the_client_id(
    context: BrowserContext, server: LiveServer, ui_creds: dict[str, Any]
) -> None:
    page = context.new_page()
    page.goto(server.base_url + "/ui/signin")
    page.fill("input[name=client_id]", ui_creds["client_id"])
    page.fill("input[name=client_secret]", "not-the-secret")
    page.click("button[type=submit]")
    expect(page.locator("#signin-error")).to_contain_text("Invalid client credentials")
    expect(page.locator("input[name=client_id]")).to_have_value(ui_creds["client_id"])


def test_sign_in_with_a_pasted_token_and_a_session_cookie_that_scripts_cannot_read(
    context: BrowserContext, server: LiveServer, ui_creds: dict[str, Any]
) -> None:
    token = httpx.post(
        ui_creds["token_url"],
        data={
            "grant_type": "client_credentials",
            "client_id": ui_creds["client_id"],
            "client_secret": ui_creds["client_secret"],
            "scope": ui_creds["scopes"][0],
        },
    ).json()["access_token"]
    page = context.new_page()
    page.goto(server.base_url + "/ui/signin")
    page.check("input[value=token]")
    expect(page.locator("input[name=client_id]")).to_be_hidden()
    page.fill("textarea[name=token]", token)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Functions")
    cookie = next(c for c in context.cookies() if c["name"] == "fnhost_ui")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert page.evaluate("document.cookie").find("fnhost_ui=") == -1


def test_a_client_without_access_to_the_project_cannot_sign_in(
    context: BrowserContext, server: LiveServer
) -> None:
    creds = server.create_client("no-rights", "--no-admin")
    page = context.new_page()
    page.goto(server.base_url + "/ui/signin")
    page.fill("input[name=client_id]", creds["client_id"])
    page.fill("input[name=client_secret]", creds["client_secret"])
    page.click("button[type=submit]")
    expect(page.locator("#signin-error")).to_contain_text("don't have access")


def test_posts_without_the_csrf_token_are_refused(page: Page, server: LiveServer) -> None:
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    resp = httpx.post(
        f"{server.base_url}/ui/upload",
        cookies={"fnhost_ui": cookies["fnhost_ui"]},
        data={"name": "sneaky"},
        files={"file": ("f.zip", b"PK\x05\x06" + b"\0" * 18)},
    )
    assert resp.status_code == 403
    assert "CSRF" in resp.json()["error"]
    resp = httpx.post(
        f"{server.base_url}/ui/functions/1/call",
        cookies={"fnhost_ui": cookies["fnhost_ui"]},
        json={"data": "{}"},
        headers={"X-CSRF-Token": "wrong"},
    )
    assert resp.status_code == 403


# -- upload and deploy -------------------------------------------------------------------------------
def test_a_file_that_is_not_a_zip_is_refused_next_to_the_file_field(
    page: Page, server: LiveServer, tmp_path: Path
) -> None:
    not_zip = tmp_path / "handler.py"
    not_zip.write_text(HANDLER)
    upload(
        page, server.base_url, not_zip, "kept-name",
        external_id="kept-xid", description="kept description", env_vars="A=1\nB=two",
    )  # fmt: skip
    expect(page.locator("#error-file")).to_contain_text("is not a zip file")
    expect(page.locator("#name")).to_have_value("kept-name")
    expect(page.locator("#external_id")).to_have_value("kept-xid")
    expect(page.locator("#description")).to_have_value("kept description")
    expect(page.locator("#env_vars")).to_have_value("A=1\nB=two")


def test_invalid_fields_keep_the_uploaded_zip_and_the_other_fields(
    page: Page, server: LiveServer, tmp_path: Path
) -> None:
    upload(
        page, server.base_url, make_zip(tmp_path / "code.zip", HANDLER), "bad-fields",
        env_vars="not a pair", cpu="lots",
    )  # fmt: skip
    expect(page.locator("#error-env_vars")).to_contain_text("KEY=value")
    expect(page.locator("#error-cpu")).to_contain_text("must be a number")
    expect(page.locator("#name")).to_have_value("bad-fields")
    page.fill("#env_vars", "")
    page.fill("#cpu", "9999")
    page.click("#deploy-button")  # the zip was kept: no need to choose it again
    expect(page.locator("#error-cpu")).to_contain_text("cpu must be between")
    expect(page.locator("#dropzone")).to_contain_text("code.zip")


def test_a_failed_build_shows_its_error_trace(page: Page, server: LiveServer, tmp_path: Path) -> None:
    deployed(page, server.base_url, tmp_path, "broken-import", BROKEN_HANDLER)
    expect(page.locator("#status-badge")).to_have_text("Failed", timeout=DEPLOY_TIMEOUT_MS)
    expect(page.locator("#deploy-error-message")).to_be_visible()
    expect(page.locator("#deploy-error-trace")).to_contain_text("this module cannot be imported")
    expect(page.locator(".steps li.failed")).to_have_text("Failed")


def test_upload_deploy_call_and_schedule(page: Page, server: LiveServer, tmp_path: Path) -> None:
    base = server.base_url
    upload(
        page, base, make_zip(tmp_path / "echo.zip", HANDLER), "echo",
        external_id="echo-ui", description="Echoes its data", owner="ui-tests",
        env_vars="GREETING=hi", secrets="api-key=s3cret",
    )  # fmt: skip
    expect(page.locator("h1")).to_contain_text("echo")
    # the page follows the deployment live, without a reload
    expect(page.locator("#status-badge")).to_have_text("Ready", timeout=DEPLOY_TIMEOUT_MS)
    expect(page.locator(".steps li.done")).to_have_count(3)
    details = page.locator("dl.details")
    expect(details).to_contain_text("echo-ui")
    expect(details).to_contain_text("GREETING=hi")
    expect(details).to_contain_text("api-key=***")
    assert "s3cret" not in page.content()

    # call with data; the response and logs appear when the call ends
    call(page, '{"numbers": [1, 2, 3]}')
    expect(page.locator("#call-status")).to_have_text("Completed", timeout=CALL_TIMEOUT_MS)
    expect(page.locator("#call-response")).to_contain_text('"sum": 6')
    expect(page.locator("#call-logs")).to_contain_text("hello from the page, got {'numbers': [1, 2, 3]}")
    # the calls table has it; a row opens to its response and logs
    row = page.locator("tr.call-row").first
    expect(row).to_contain_text("Completed")
    row.click()
    expect(page.locator("tr.call-detail .call-response").first).to_contain_text('"sum": 6')
    expect(page.locator("tr.call-detail .call-logs").first).to_contain_text("hello from the page")

    # invalid JSON: a message next to the box, the text kept
    call(page, '{"numbers": [1, 2,]}')
    expect(page.locator("#call-error")).to_contain_text("Invalid JSON")
    expect(page.locator("#call-data")).to_have_value('{"numbers": [1, 2,]}')

    # schedules: an invalid cron expression is explained next to the field, the rest kept
    page.fill("#schedule-name", "every-minute")
    page.fill("#schedule-cron", "61 * * * *")
    page.fill("#schedule-data", '{"numbers": [5]}')
    page.click("#schedule-button")
    expect(page.locator("#error-cron")).to_contain_text("61")
    expect(page.locator("#schedule-name")).to_have_value("every-minute")
    expect(page.locator("#schedule-data")).to_have_value('{"numbers": [5]}')

    page.fill("#schedule-cron", "*/5 * * * *")
    page.click("#schedule-button")
    sched = page.locator("#schedules-table tr[data-schedule-name=every-minute]")
    expect(sched).to_contain_text("*/5 * * * *")
    expect(sched).to_contain_text("UTC")  # next fire times
    sched.get_by_role("button", name="Pause").click()
    expect(sched).to_contain_text("Paused")
    sched.get_by_role("button", name="Resume").click()
    expect(sched).to_contain_text("Active")
    page.once("dialog", lambda d: d.accept())
    sched.get_by_role("button", name="Delete").click()
    expect(page.locator(".flash.ok")).to_contain_text("deleted")
    expect(sched).to_have_count(0)

    # the functions list shows it with its counts and a working filter box
    page.goto(base + "/ui/")
    fn_row = page.locator("#functions-table tr", has_text="echo-ui")
    expect(fn_row).to_contain_text("Ready")
    expect(fn_row).to_contain_text("Completed")
    page.fill("#filter", "no-such-function-name")
    expect(fn_row).to_be_hidden()
    page.fill("#filter", "echo")
    expect(fn_row).to_be_visible()


def test_new_code_and_a_rollback_from_the_function_page(page: Page, server: LiveServer, tmp_path: Path) -> None:
    base = server.base_url
    deployed(page, base, tmp_path, "versioned-ui", "def handle(data):\n    return 'one'\n")
    expect(page.locator("#status-badge")).to_have_text("Ready", timeout=DEPLOY_TIMEOUT_MS)
    expect(page.locator("#versions-table tr[data-version='1']")).to_contain_text("Current")
    two = make_zip(tmp_path / "two.zip", "def handle(data):\n    return 'two'\n")
    # no file, or a bad path: the message at its field, and nothing deployed
    page.click("#version-button")
    expect(page.locator("#error-file")).to_contain_text("Choose a zip")
    expect(page.locator("#version-file")).to_have_attribute("aria-invalid", "true")
    page.set_input_files("#version-file", str(two))
    page.fill("#version-function-path", "../up.py")
    page.click("#version-button")
    expect(page.locator("#error-function_path")).to_contain_text("relative path")
    expect(page.locator("#version-function-path")).to_have_value("../up.py")
    expect(page.locator("#versions-table tbody tr")).to_have_count(1)
    # new code: built while version 1 serves; the page follows it to current, without a reload
    page.set_input_files("#version-file", str(two))
    page.fill("#version-function-path", "handler.py")
    page.click("#version-button")
    expect(page.locator(".flash.ok")).to_contain_text("Version 2 is being built")
    expect(page.locator("#versions-table tr[data-version='2']")).to_contain_text("Current", timeout=DEPLOY_TIMEOUT_MS)
    call(page, "{}")
    expect(page.locator("#call-response")).to_have_text("two", timeout=CALL_TIMEOUT_MS)
    # the same code again makes no version, and says so
    page.set_input_files("#version-file", str(two))
    page.click("#version-button")
    expect(page.locator(".flash.ok")).to_contain_text("Unchanged")
    expect(page.locator("#versions-table tbody tr")).to_have_count(2)
    # roll back, by a button that says what it does
    page.get_by_role("button", name="Roll back to version 1").click()
    expect(page.locator(".flash.ok")).to_contain_text("version 1 is current")
    expect(page.locator("#versions-table tr[data-version='1']")).to_contain_text("Current")
    expect(page.get_by_role("button", name="Roll back to version 2")).to_be_visible()
    call(page, "{}")
    expect(page.locator("#call-response")).to_have_text("one", timeout=CALL_TIMEOUT_MS)


def test_a_failed_call_is_on_the_failed_calls_page(page: Page, server: LiveServer, tmp_path: Path) -> None:
    fid = deployed(page, server.base_url, tmp_path, "fails-on-demand")
    expect(page.locator("#status-badge")).to_have_text("Ready", timeout=DEPLOY_TIMEOUT_MS)
    call(page, '{"fail": true}')
    expect(page.locator("#call-status")).to_have_text("Failed", timeout=CALL_TIMEOUT_MS)
    expect(page.locator("#call-logs")).to_contain_text("asked to fail")
    call_id = page.locator("#call-id").inner_text().lstrip("#")
    page.click("header nav >> text=Failed calls")
    row = page.locator(f"#failed-table tr[data-call-id='{call_id}']")
    expect(row).to_contain_text("fails-on-demand")
    expect(row).to_contain_text("Failed")
    row.locator(f"a[href='/ui/functions/{fid}?call={call_id}#calls']").click()
    expect(page.locator("tr.call-detail .call-logs").first).to_contain_text("asked to fail")


def test_a_running_call_shows_its_log_lines_live(
    page: Page, server: LiveServer, ui_creds: dict[str, Any], tmp_path: Path
) -> None:
    deployed(page, server.base_url, tmp_path, "live-logs")
    expect(page.locator("#status-badge")).to_have_text("Ready", timeout=DEPLOY_TIMEOUT_MS)
    gate = Gate(server.client(ui_creds))
    call(page, json.dumps({"gate": gate.data}))
    # the call is held at the gate: what it printed so far is on the page while it runs
    expect(page.locator("#call-logs")).to_contain_text("waiting for the gate", timeout=CALL_TIMEOUT_MS)
    expect(page.locator("#call-status")).to_have_text("Running")
    expect(page.locator("#call-logs")).not_to_contain_text("through the gate")
    gate.open()
    expect(page.locator("#call-status")).to_have_text("Completed", timeout=CALL_TIMEOUT_MS)
    expect(page.locator("#call-logs")).to_contain_text("through the gate")
    expect(page.locator("#call-response")).to_contain_text('"sum": 0')


# -- expired sign-in ---------------------------------------------------------------------------------
def test_an_expired_sign_in_returns_to_the_form_with_its_input(
    browser: Browser, start_server: Any, tmp_path: Path
) -> None:
    live = start_server(env={"FNHOST_UI_SESSION_SECONDS": "3"})
    creds = live.create_client("expiry")
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        sign_in(page, live.base_url, creds)
        page.goto(live.base_url + "/ui/upload")
        page.fill("#name", "typed-before-expiry")
        page.fill("#description", "not lost")
        time.sleep(3.5)
        page.click("#deploy-button")
        expect(page.locator("#expired-message")).to_contain_text("expired")
        page.fill("input[name=client_id]", creds["client_id"])
        page.fill("input[name=client_secret]", creds["client_secret"])
        page.click("button[type=submit]")
        expect(page).to_have_url(live.base_url + "/ui/upload")
        expect(page.locator("#name")).to_have_value("typed-before-expiry")
        expect(page.locator("#description")).to_have_value("not lost")
    finally:
        ctx.close()


# -- screenshots ------------------------------------------------------------------------------------
def test_the_readme_shows_screenshots_that_exist() -> None:
    """scripts/screenshots.py writes them; the README's "Web page" section shows them."""
    repo = Path(__file__).resolve().parents[1]
    shown = re.findall(r"\((docs/screenshots/[\w-]+\.png)\)", (repo / "README.md").read_text())
    assert {"functions.png", "upload.png", "function.png", "failed.png"} <= {Path(p).name for p in shown}
    for path in shown:
        assert (repo / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
