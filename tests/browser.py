"""What the browser tests share: Debian's chromium, a signed-in page, uploads and calls.

``tests/test_ui.py`` and ``tests/test_ui_pages.py`` drive the web page with these, in
chromium through Playwright, against a real server (``tests/live.py``).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect

from tests.gate import WAIT_AT_GATE

REPO = Path(__file__).resolve().parents[1]
# installed by ./scripts/setup from the npm registry (pinned there)
AXE = REPO / ".node-tools" / "node_modules" / "axe-core" / "axe.min.js"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEPLOY_TIMEOUT_MS = 300_000  # a cold environment build installs the cognite-sdk baseline
CALL_TIMEOUT_MS = 60_000

HANDLER = WAIT_AT_GATE + '''

def handle(client, data):
    print("hello from the page, got", data, flush=True)
    if data.get("gate"):  # hold the call until the test opens the gate
        print("waiting for the gate", flush=True)
        wait_at_gate(client, data["gate"])
        print("through the gate")
    if data.get("fail"):
        raise ValueError("asked to fail")
    return {"echo": data, "sum": sum(data.get("numbers", []))}
'''
BROKEN_HANDLER = '''\
raise RuntimeError("this module cannot be imported")

def handle(data):
    return data
'''


def make_zip(path: Path, source: str) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("handler.py", source)
    path.write_bytes(buf.getvalue())
    return path


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def sign_in(page: Page, base_url: str, creds: dict[str, Any], next_path: str = "/ui/") -> None:
    page.goto(f"{base_url}{next_path}")
    expect(page).to_have_url(f"{base_url}/ui/signin?next={next_path.replace('/', '%2F')}")
    page.fill("input[name=client_id]", creds["client_id"])
    page.fill("input[name=client_secret]", creds["client_secret"])
    page.click("button[type=submit]")
    expect(page.locator("header .who")).to_contain_text(creds["client_id"])


def upload(page: Page, base_url: str, zip_path: Path, name: str, **fields: str) -> None:
    page.goto(f"{base_url}/ui/upload")
    with page.expect_file_chooser() as chooser:
        page.click("#dropzone")
    chooser.value.set_files(str(zip_path))
    expect(page.locator("#dropzone .dz-text")).to_contain_text(zip_path.name)
    page.fill("#name", name)
    for key, value in fields.items():
        page.fill(f"#{key}", value)
    page.click("#deploy-button")


def deployed(page: Page, base_url: str, tmp_path: Path, name: str, source: str = HANDLER) -> int:
    upload(page, base_url, make_zip(tmp_path / f"{name}.zip", source), name)
    expect(page.locator("h1")).to_contain_text(name)
    return int(page.url.rsplit("/", 1)[-1])


def call(page: Page, data: str) -> None:
    page.fill("#call-data", data)
    page.click("#call-button")



def axe_findings(page: Page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """axe-core's violations of those impacts on the page as it is now, one line each."""
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: ./scripts/setup installs axe-core from the npm registry")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['impact']}: {v['id']} ({v['help']}) at {[n['target'] for n in v['nodes']][:5]}"
        for v in result["violations"]
        if v["impact"] in impacts
    ]
