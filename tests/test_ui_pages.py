"""Every page of the web UI at a laptop's width (1280 px) and a phone's (375 px), in chromium.

What a new user trips on (issue 19): pages wider than the phone, lists that go stale while
the page is open, messages that contradict the page or use the API's words at the wrong
field, forms that resubmit on reload, call rows that are not buttons, no live regions, no
favicon. Each test drives the real page against a real server; the accessibility check is
axe-core (installed by ./scripts/setup from the npm registry), run in the page.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cognite.client import CogniteClient
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.browser import (
    BROKEN_HANDLER,
    CALL_TIMEOUT_MS,
    DEPLOY_TIMEOUT_MS,
    HANDLER,
    axe_findings,
    call,
    deployed,
    launch,
    make_zip,
    sign_in,
    upload,
)
from tests.live import LiveServer, wait_for

LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
WIDTHS = pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["1280px", "375px"])
# the API's names for fields, which a person filling in the form never sees
API_WORDS = re.compile(r"fileId|functionPath|externalId|envVars|cronExpression|indexUrl")
LIVE_TIMEOUT_MS = 15_000  # the open page looks every 2 s


def zip_bytes(source: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("handler.py", source)
    return buf.getvalue()


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
def creds(server: LiveServer) -> dict[str, Any]:
    return server.create_client("ui-pages")


@pytest.fixture(scope="module")
def sdk(server: LiveServer, creds: dict[str, Any]) -> CogniteClient:
    return server.client(creds)


@pytest.fixture(scope="module")
def project(sdk: CogniteClient) -> dict[str, int]:
    """A project with something on every page: a Ready function with a completed and a failed
    call and a schedule, and a function whose build failed."""
    ok = sdk.functions.create(
        name="pages-echo", external_id="pages-echo",
        file_id=sdk.files.upload_bytes(zip_bytes(HANDLER), name="pages-echo.zip").id,
    )  # fmt: skip
    broken = sdk.functions.create(
        name="pages-broken", file_id=sdk.files.upload_bytes(zip_bytes(BROKEN_HANDLER), name="broken.zip").id
    )
    for fn in (ok, broken):
        wait_for(lambda fn=fn: fn.update() or fn.status in ("Ready", "Failed"), timeout=300, what="build")
    assert ok.status == "Ready" and broken.status == "Failed", (ok.error, broken.error)
    ok.call({"numbers": [1, 2]})
    ok.call({"fail": True})
    sdk.functions.schedules.create(
        name="pages-nightly", cron_expression="0 3 * * *", function_id=ok.id, data={"numbers": [3]}
    )
    return {"ok": ok.id, "broken": broken.id}


@pytest.fixture(params=[LAPTOP, PHONE], ids=["1280px", "375px"])
def context(browser: Browser, request: pytest.FixtureRequest) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=request.param)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext, server: LiveServer, creds: dict[str, Any]) -> Page:
    page = context.new_page()
    sign_in(page, server.base_url, creds)
    return page


def every_page(page: Page, base: str, project: dict[str, int]) -> Iterator[str]:
    """Go to each page (and each state of a page a person meets), yielding its name."""
    page.goto(f"{base}/ui/")
    yield "functions"
    page.goto(f"{base}/ui/upload")
    yield "upload"
    page.click("#deploy-button")  # nothing filled in: errors at their fields
    expect(page.locator("#error-file")).to_be_visible()
    yield "upload with errors"
    page.goto(f"{base}/ui/functions/{project['ok']}")
    expect(page.locator("tr.call-row")).not_to_have_count(0)
    page.locator("button.call-toggle").first.click()
    expect(page.locator("tr.call-detail .call-logs").first).to_be_visible()
    yield "function, a call open"
    page.goto(f"{base}/ui/functions/{project['broken']}")
    expect(page.locator("#deploy-error-trace")).to_contain_text("cannot be imported")
    yield "function, build failed"
    page.goto(f"{base}/ui/failed")
    expect(page.locator("#failed-table tr[data-call-id]")).not_to_have_count(0)
    yield "failed calls"


def signed_out_pages(page: Page, base: str) -> Iterator[str]:
    page.goto(f"{base}/ui/signin")
    yield "sign in"
    page.fill("input[name=client_id]", "nobody")
    page.fill("input[name=client_secret]", "wrong")
    page.click("button[type=submit]")
    expect(page.locator("#signin-error")).to_be_visible()
    yield "sign in, refused"


# -- phone width ---------------------------------------------------------------------------------
def test_every_page_fits_a_phone_without_scrolling_sideways(
    browser: Browser, server: LiveServer, creds: dict[str, Any], project: dict[str, int]
) -> None:
    ctx = browser.new_context(viewport=PHONE)
    ctx.set_default_timeout(15_000)
    try:
        page = ctx.new_page()
        wide: dict[str, int] = {}
        for name in signed_out_pages(page, server.base_url):
            wide[name] = page.evaluate("document.documentElement.scrollWidth")
        sign_in(page, server.base_url, creds)
        for name in every_page(page, server.base_url, project):
            wide[name] = page.evaluate("document.documentElement.scrollWidth")
            # what the header offers is on the screen, not to the right of it
            for link in (page.get_by_role("button", name="Sign out"), page.get_by_role("link", name="Upload", exact=True)):
                box = link.bounding_box()
                assert box is not None and box["x"] + box["width"] <= PHONE["width"], (name, box)
        assert {name: w for name, w in wide.items() if w > PHONE["width"]} == {}
        page.goto(f"{server.base_url}/ui/")
        # the filter box is focused on load and the page did not scroll to show it
        expect(page.locator("#filter")).to_be_focused()
        assert page.evaluate("window.scrollX") == 0
        box = page.get_by_role("link", name="Upload a function").bounding_box()
        assert box is not None and box["x"] + box["width"] <= PHONE["width"]
    finally:
        ctx.close()


# -- accessibility ---------------------------------------------------------------------------------
@WIDTHS
def test_no_page_has_serious_or_critical_accessibility_findings(
    browser: Browser, server: LiveServer, creds: dict[str, Any], project: dict[str, int], viewport: Any
) -> None:
    ctx = browser.new_context(viewport=viewport)
    ctx.set_default_timeout(15_000)
    try:
        page = ctx.new_page()
        findings: dict[str, list[str]] = {}
        for name in signed_out_pages(page, server.base_url):
            findings[name] = axe_findings(page)
        sign_in(page, server.base_url, creds)
        for name in every_page(page, server.base_url, project):
            findings[name] = axe_findings(page)
        found = {name: f for name, f in findings.items() if f}
        assert found == {}, json.dumps(found, indent=1)
    finally:
        ctx.close()


def test_a_favicon_on_every_page(page: Page, server: LiveServer) -> None:
    r = httpx.get(server.base_url + "/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/")
    assert r.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    for href in page.locator("link[rel=icon]").evaluate_all("links => links.map(l => l.href)"):
        assert httpx.get(href).status_code == 200, href


def test_call_rows_are_buttons_that_say_whether_they_are_open(
    page: Page, server: LiveServer, project: dict[str, int]
) -> None:
    page.goto(f"{server.base_url}/ui/functions/{project['ok']}")
    toggle = page.get_by_role("button", name=re.compile(r"Call #\d+")).first
    expect(toggle).to_have_attribute("aria-expanded", "false")
    detail = page.locator("#" + toggle.get_attribute("aria-controls"))
    expect(detail).to_be_hidden()
    toggle.focus()
    page.keyboard.press("Enter")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(detail).to_be_visible()
    expect(detail.locator(".call-logs")).to_contain_text("hello from the page")
    page.keyboard.press("Space")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(detail).to_be_hidden()


def test_status_and_call_results_are_announced_and_each_field_has_one_label(
    page: Page, server: LiveServer, project: dict[str, int]
) -> None:
    page.goto(f"{server.base_url}/ui/functions/{project['ok']}")
    # live regions: a deployment's status, a call's outcome, an error about the call data
    expect(page.locator("#deploy-message")).to_have_attribute("aria-live", "polite")
    expect(page.locator("#call-summary")).to_have_attribute("aria-live", "polite")
    expect(page.locator("#call-error")).to_have_attribute("role", "alert")
    call(page, '{"numbers": [4]}')
    expect(page.locator("#call-summary")).to_contain_text("Completed", timeout=CALL_TIMEOUT_MS)
    page.goto(f"{server.base_url}/ui/upload")
    expect(page.get_by_label("Function path")).to_have_count(1)
    expect(page.get_by_label("Function path")).to_have_attribute("id", "function_path")
    expect(page.get_by_label("Code")).to_have_attribute("type", "file")
    # the rule for secret names is there before anything is submitted
    expect(page.locator("#secrets-hint")).to_contain_text("lowercase letters, digits and dashes")
    expect(page.get_by_label("Secrets")).to_have_attribute("aria-describedby", "secrets-hint")


# -- lists that follow the truth --------------------------------------------------------------------
def test_calls_made_elsewhere_appear_on_the_open_page_without_a_click(
    page: Page, server: LiveServer, sdk: CogniteClient, tmp_path: Path
) -> None:
    fid = deployed(page, server.base_url, tmp_path, "followed")
    expect(page.locator("#status-badge")).to_have_text("Ready", timeout=DEPLOY_TIMEOUT_MS)
    expect(page.locator("#last-called")).to_have_text("—")
    expect(page.locator("#calls-table")).to_have_text("No calls yet.")
    made = sdk.functions.call(id=fid, data={"numbers": [7, 8]})  # through the API, not the page
    row = page.locator(f"tr.call-row[data-call-id='{made.id}']")
    expect(row).to_contain_text("Completed", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#last-called")).to_contain_text("UTC")
    # an open row stays open while the table changes under it
    row.get_by_role("button").click()
    expect(page.locator(f"#call-detail-{made.id}")).to_contain_text('"sum": 15')
    second = sdk.functions.call(id=fid, data={"numbers": [1]})
    expect(page.locator(f"tr.call-row[data-call-id='{second.id}']")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("tr.call-row").first).to_have_attribute("data-call-id", str(second.id))
    expect(page.locator(f"#call-detail-{made.id}")).to_be_visible()
    expect(row.get_by_role("button")).to_have_attribute("aria-expanded", "true")


def test_a_scheduled_call_appears_with_the_schedule_s_name(
    browser: Browser, start_server: Any, tmp_path: Path
) -> None:
    live = start_server(env={"FNHOST_SCHEDULER_SECONDS_CRON": "true"})
    creds = live.create_client("ui-scheduled")
    sdk = live.client(creds)
    fn = sdk.functions.create(
        name="ticking", file_id=sdk.files.upload_bytes(zip_bytes(HANDLER), name="ticking.zip").id
    )
    wait_for(lambda: fn.update() or fn.status in ("Ready", "Failed"), timeout=300, what="build")
    ctx = browser.new_context(viewport=LAPTOP)
    ctx.set_default_timeout(15_000)
    try:
        page = ctx.new_page()
        sign_in(page, live.base_url, creds, next_path=f"/ui/functions/{fn.id}")
        expect(page.locator("#calls-table")).to_have_text("No calls yet.")
        schedule = sdk.functions.schedules.create(
            name="every-second", cron_expression="* * * * * *", function_id=fn.id, data={"numbers": [2]}
        )
        try:
            row = page.locator("tr.call-row").first
            expect(row).to_contain_text("every-second", timeout=LIVE_TIMEOUT_MS)
            expect(row).not_to_contain_text(f"schedule {schedule.id}")
        finally:
            sdk.functions.schedules.delete(id=schedule.id)
        # and the failed-calls page names schedules too (a deleted one says so)
        page.goto(f"{live.base_url}/ui/functions/{fn.id}")
        expect(page.locator("tr.call-row").first).to_contain_text("a deleted schedule")
    finally:
        ctx.close()


# -- messages that say what is true, where it is about ------------------------------------------------
@WIDTHS
def test_the_deploy_message_goes_when_the_build_fails(
    browser: Browser, server: LiveServer, creds: dict[str, Any], tmp_path: Path, viewport: Any
) -> None:
    ctx = browser.new_context(viewport=viewport)
    ctx.set_default_timeout(15_000)
    try:
        page = ctx.new_page()
        sign_in(page, server.base_url, creds)
        deployed(page, server.base_url, tmp_path, f"fails-to-build-{viewport['width']}", BROKEN_HANDLER)
        expect(page.locator("#status-badge")).to_have_text("Failed", timeout=DEPLOY_TIMEOUT_MS)
        expect(page.get_by_text("queued for deployment")).to_have_count(0)
        expect(page.locator("#deploy-message")).to_be_hidden()
        expect(page.locator("#deploy-error-message")).to_be_visible()
        page.reload()  # and the same after a reload
        expect(page.get_by_text("queued for deployment")).to_have_count(0)
        expect(page.locator(".flash")).to_have_count(0)
    finally:
        ctx.close()


def test_an_invalid_call_hides_the_last_call_s_result(page: Page, server: LiveServer, project: dict[str, int]) -> None:
    page.goto(f"{server.base_url}/ui/functions/{project['ok']}")
    call(page, '{"numbers": [1, 2, 3]}')
    expect(page.locator("#call-status")).to_have_text("Completed", timeout=CALL_TIMEOUT_MS)
    expect(page.locator("#call-result")).to_be_visible()
    call(page, '{"numbers": [1, 2,]}')
    expect(page.locator("#call-error")).to_contain_text("Invalid JSON")
    expect(page.locator("#call-result")).to_be_hidden()  # that call did not run
    expect(page.locator("#call-data")).to_have_attribute("aria-invalid", "true")
    # the message goes once it stops being true
    page.fill("#call-data", '{"numbers": [1, 2]}')
    expect(page.locator("#call-error")).to_be_hidden()
    expect(page.locator("#call-data")).not_to_have_attribute("aria-invalid", "true")


@WIDTHS
def test_failed_forms_land_on_an_address_that_is_safe_to_reload(
    browser: Browser, server: LiveServer, creds: dict[str, Any], project: dict[str, int], viewport: Any
) -> None:
    ctx = browser.new_context(viewport=viewport)
    ctx.set_default_timeout(15_000)
    try:
        page = ctx.new_page()
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        sign_in(page, server.base_url, creds, next_path=f"/ui/functions/{project['ok']}")
        # a schedule whose cron expression is refused, made as another client
        page.fill("#schedule-name", "reload-safe")
        page.fill("#schedule-cron", "61 * * * *")
        page.fill("#schedule-client-id", creds["client_id"])
        page.fill("#schedule-client-secret", creds["client_secret"])
        page.click("#schedule-button")
        expect(page.locator("#error-cron")).to_contain_text("61")
        assert not page.url.split("?")[0].endswith("/schedules"), page.url
        assert re.search(rf"/ui/functions/{project['ok']}\?form=[\w-]+#new-schedule$", page.url), page.url
        assert creds["client_secret"] not in page.url and creds["client_secret"] not in page.content()
        before = len(posts)
        page.reload()
        assert len(posts) == before  # a reload posts nothing
        expect(page.locator("#error-cron")).to_contain_text("61")
        expect(page.locator("#schedule-name")).to_have_value("reload-safe")
        expect(page.locator("#schedule-client-id")).to_have_value(creds["client_id"])
        expect(page.locator("#schedule-client-secret")).to_have_value("")
        # the upload form: the same
        page.goto(f"{server.base_url}/ui/upload")
        page.fill("#name", "kept-after-reload")
        page.click("#deploy-button")
        expect(page.locator("#error-file")).to_be_visible()
        assert re.search(r"/ui/upload\?form=[\w-]+$", page.url), page.url
        before = len(posts)
        page.reload()
        assert len(posts) == before
        expect(page.locator("#name")).to_have_value("kept-after-reload")
        expect(page.locator("#error-file")).to_be_visible()
        # a fresh upload page is fresh
        page.goto(f"{server.base_url}/ui/upload")
        expect(page.locator("#name")).to_have_value("")
        expect(page.locator(".field-error")).to_have_count(0)
    finally:
        ctx.close()


def test_a_failed_sign_in_lands_on_an_address_that_is_safe_to_reload(
    context: BrowserContext, server: LiveServer, creds: dict[str, Any]
) -> None:
    page = context.new_page()
    page.goto(server.base_url + "/ui/signin")
    page.fill("input[name=client_id]", creds["client_id"])
    page.fill("input[name=client_secret]", "not-the-secret")
    page.click("button[type=submit]")
    expect(page.locator("#signin-error")).to_contain_text("Invalid client credentials")
    assert re.search(r"/ui/signin\?form=[\w-]+$", page.url), page.url
    page.reload()
    expect(page.locator("#signin-error")).to_contain_text("Invalid client credentials")
    expect(page.locator("input[name=client_id]")).to_have_value(creds["client_id"])
    expect(page.locator("input[name=client_secret]")).to_have_value("")
    assert "not-the-secret" not in page.content()


@WIDTHS
def test_upload_errors_are_at_their_field_in_a_person_s_words(
    browser: Browser, server: LiveServer, creds: dict[str, Any], tmp_path: Path, viewport: Any
) -> None:
    ctx = browser.new_context(viewport=viewport)
    ctx.set_default_timeout(15_000)
    try:
        page = ctx.new_page()
        sign_in(page, server.base_url, creds)
        base = server.base_url
        # a zip without handle(): the drop zone's error, not the name's
        no_handle = make_zip(tmp_path / "no-handle.zip", "def run(data):\n    return data\n")
        upload(page, base, no_handle, "no-handle")
        expect(page.locator("#error-file")).to_contain_text("does not define a function named 'handle'")
        expect(page.locator("#error-name")).to_have_count(0)
        expect(page.locator("#file")).to_have_attribute("aria-invalid", "true")
        # an external id that is taken; a function path out of the zip; a bad secret name
        good = make_zip(tmp_path / "good.zip", HANDLER)
        xid = f"taken-{viewport['width']}"
        upload(page, base, good, "first", external_id=xid)
        expect(page.locator("#status-badge")).to_be_visible()
        for fields, where, says in [
            ({"external_id": xid}, "external_id", "external id"),
            ({"function_path": "../outside.py"}, "function_path", "function path"),
            ({"secrets": "Bad_Name=x"}, "secrets", "lowercase letters"),
            ({"env_vars": "FNHOST_X=1"}, "env_vars", "reserved prefix"),
        ]:
            upload(page, base, good, "second", **fields)
            error = page.locator(f"#error-{where}")
            expect(error).to_contain_text(says)
            assert not API_WORDS.search(error.inner_text()), error.inner_text()
            expect(page.locator(".field-error")).to_have_count(1)
            expect(page.locator("#error-_")).to_have_count(0)
    finally:
        ctx.close()


@WIDTHS
def test_messages_name_things_by_their_names(
    browser: Browser, server: LiveServer, creds: dict[str, Any], tmp_path: Path, viewport: Any
) -> None:
    ctx = browser.new_context(viewport=viewport)
    ctx.set_default_timeout(15_000)
    try:
        page = ctx.new_page()
        sign_in(page, server.base_url, creds)
        name = f"named-{viewport['width']}"
        fid = deployed(page, server.base_url, tmp_path, name)
        page.fill("#schedule-name", "weekly-report")
        page.fill("#schedule-cron", "0 6 * * 1")
        page.click("#schedule-button")
        sched = page.locator("#schedules-table tr[data-schedule-name=weekly-report]")
        sched.get_by_role("button", name="Pause").click()
        expect(page.locator(".flash.ok")).to_have_text("Schedule 'weekly-report' was paused.")
        page.once("dialog", lambda d: d.accept())
        page.get_by_role("button", name="Delete function").click()
        expect(page.locator(".flash.ok")).to_have_text(f"Function '{name}' was deleted.")
        assert f"Function {fid} " not in page.content()
    finally:
        ctx.close()


def test_groups_of_a_fresh_server_are_listed(start_server: Any) -> None:
    """The admin client of a fresh server (the one the sign-in page points to) is in a group."""
    live = start_server()
    admin = json.loads((live.home / "admin-client.json").read_text())
    groups = live.client(admin).iam.groups.list(all=True)
    assert [(g.name, g.members) for g in groups] == [("fnhost-admins", [admin["client_id"]])]


@WIDTHS
def test_a_failed_build_s_error_is_at_the_code_when_the_fixed_code_is_uploaded(
    browser: Browser, server: LiveServer, creds: dict[str, Any], tmp_path: Path, viewport: Any
) -> None:
    """The build's error belongs to the code that was uploaded: it is shown at the drop zone."""
    ctx = browser.new_context(viewport=viewport)
    ctx.set_default_timeout(15_000)
    try:
        page = ctx.new_page()
        sign_in(page, server.base_url, creds)
        xid = f"fixed-later-{viewport['width']}"
        upload(
            page, server.base_url, make_zip(tmp_path / "broken.zip", BROKEN_HANDLER), "fixed-later",
            external_id=xid, env_vars="MODE=test", secrets="api-key=s3cret-kept-out",
        )  # fmt: skip
        expect(page.locator("#status-badge")).to_have_text("Failed", timeout=DEPLOY_TIMEOUT_MS)
        failed_id = int(page.url.rsplit("/", 1)[-1])
        build_error = page.locator("#deploy-error-message").inner_text()
        page.get_by_role("link", name="Upload fixed code").click()
        expect(page).to_have_url(re.compile(rf"/ui/upload\?retry={failed_id}$"))
        expect(page.locator("#error-file")).to_contain_text(build_error)
        expect(page.locator(".field-error")).to_have_count(1)
        expect(page.locator("#name")).to_have_value("fixed-later")
        expect(page.locator("#external_id")).to_have_value(xid)
        expect(page.locator("#env_vars")).to_have_value("MODE=test")
        expect(page.locator("#replacing")).to_contain_text("api-key")
        assert "s3cret-kept-out" not in page.content()
        with page.expect_file_chooser() as chooser:
            page.click("#dropzone")
        chooser.value.set_files(str(make_zip(tmp_path / "fixed.zip", HANDLER)))
        page.fill("#secrets", "api-key=s3cret-kept-out")
        page.click("#deploy-button")
        expect(page.locator("#status-badge")).to_have_text("Ready", timeout=DEPLOY_TIMEOUT_MS)
        expect(page.locator("dl.details")).to_contain_text(xid)
        expect(page.locator("dl.details")).to_contain_text("api-key=***")
        # the failed one was replaced: one function has the external id, and it is Ready
        page.goto(f"{server.base_url}/ui/")
        rows = page.locator("#functions-table tbody tr", has_text=xid)
        expect(rows).to_have_count(1)
        expect(rows).to_contain_text("Ready")
    finally:
        ctx.close()
