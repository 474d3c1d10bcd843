"""Screenshots of the web page for the README, taken in Debian's chromium through Playwright.

    uv run python scripts/screenshots.py [--out docs/screenshots]

Starts ``fnhost serve`` on a free port with a fresh home, deploys a few example functions
with the official cognite-sdk, calls them (one call fails), adds a schedule, then signs in
with a headless browser and writes PNGs of the main pages: ``functions.png`` (the list),
``upload.png`` (the form with a zip chosen), ``function.png`` (a call made from the page,
with its response and logs), ``deploy-failed.png`` (a failed build's error trace) and
``failed.png`` (failed calls across the project), at a laptop's width; and at a phone's
(375 px), ``phone-functions.png`` and ``phone-function.png``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cognite.client import CogniteClient  # noqa: E402
from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402
from tests.live import LiveServer, sdk_client  # noqa: E402

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
VIEWPORT = {"width": 1440, "height": 900}  # a laptop screen
PHONE = {"width": 375, "height": 812}  # a phone, as the browser tests have it
PHONE_MAX_HEIGHT = 1500  # a phone page is long: its top is what the README shows

SENSOR_AVERAGES = """\
def handle(client, data):
    readings = data.get("readings", {})
    print(f"averaging {sum(len(v) for v in readings.values())} readings from {len(readings)} sensors")
    averages = {name: round(sum(v) / len(v), 2) for name, v in readings.items() if v}
    for name, value in sorted(averages.items()):
        print(f"  {name}: {value}")
    return {"averages": averages, "sensors": len(averages)}
"""
PUMP_CHECK = """\
def handle(data):
    pump = data["pump"]
    print(f"checking pump {pump}: pressure {data['pressure']} bar")
    if data["pressure"] > 9:
        raise ValueError(f"pump {pump}: pressure {data['pressure']} bar is above the 9 bar limit")
    return {"pump": pump, "ok": True}
"""
DAILY_REPORT = """\
from datetime import date


def handle(data):
    print("building the report for", date.today().isoformat())
    return {"rows": 42, "sent_to": data.get("to", "ops@example.com")}
"""
BROKEN = """\
import pandas_that_does_not_exist  # noqa: F401


def handle(data):
    return data
"""


def deploy(client: CogniteClient, workdir: Path, name: str, source: str, **fields: Any) -> Any:
    folder = workdir / name
    folder.mkdir()
    (folder / "handler.py").write_text(source)
    return client.functions.create(name=name, external_id=name, folder=str(folder), **fields)


def wait_deployed(client: CogniteClient, ids: list[int], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = [client.functions.retrieve(id=i).status for i in ids]
        if all(s in ("Ready", "Failed") for s in statuses):
            return
        time.sleep(0.5)
    raise RuntimeError(f"functions {ids} did not finish deploying in {timeout} s")


def seed(client: CogniteClient, workdir: Path) -> dict[str, Any]:
    """Example functions, calls and a schedule, made through the API as a user would."""
    fns = {
        "sensor-averages": deploy(
            client, workdir, "sensor-averages", SENSOR_AVERAGES,
            description="Averages the latest readings per sensor", owner="data-team",
            env_vars={"UNIT": "bar"},
        ),
        "pump-health-check": deploy(
            client, workdir, "pump-health-check", PUMP_CHECK,
            description="Flags pumps running above their pressure limit", owner="maintenance",
        ),
        "daily-report": deploy(
            client, workdir, "daily-report", DAILY_REPORT,
            description="Sends the daily production report", owner="ops",
        ),
        # the SDK checks imports locally; skip that so the server reports the failed build
        "legacy-import": deploy(
            client, workdir, "legacy-import", BROKEN, owner="data-team", skip_folder_validation=True
        ),
    }  # fmt: skip
    wait_deployed(client, [f.id for f in fns.values()])
    calls = [
        ("sensor-averages", {"readings": {"p-101": [4.1, 4.3], "p-102": [6.0, 6.4, 6.2]}}),
        ("pump-health-check", {"pump": "p-101", "pressure": 4.2}),
        ("pump-health-check", {"pump": "p-102", "pressure": 9.6}),
        ("pump-health-check", {"pump": "p-104", "pressure": 12.1}),
        ("daily-report", {"to": "ops@example.com"}),
    ]
    for name, data in calls:
        call = client.functions.call(id=fns[name].id, data=data, wait=True)
        print(f"  {name}: call {call.id} {call.status}")
    client.functions.schedules.create(
        name="every-15-minutes",
        cron_expression="*/15 * * * *",
        function_id=fns["sensor-averages"].id,
        data={"readings": {"p-101": [4.0]}},
        description="Keeps the dashboard's averages fresh",
    )
    client.functions.schedules.create(
        name="every-morning",
        cron_expression="0 6 * * *",
        function_id=fns["daily-report"].id,
        data={"to": "ops@example.com"},
        description="The report for the morning meeting",
    )
    return fns


def sign_in(page: Page, base_url: str, creds: dict[str, Any]) -> None:
    page.goto(base_url + "/ui/signin")
    page.fill("input[name=client_id]", creds["client_id"])
    page.fill("input[name=client_secret]", creds["client_secret"])
    page.click("button[type=submit]")
    expect(page.locator("header .who")).to_contain_text(creds["client_id"])


def save(page: Page, path: Path, max_height: int | None = None) -> None:
    """The page down to the end of its content (no empty screen below short pages)."""
    bottom = page.evaluate(
        "Math.ceil(document.querySelector('main').getBoundingClientRect().bottom + window.scrollY)"
    )
    height = max(int(bottom), 480)
    if max_height is not None:
        height = min(height, max_height)
    width = page.viewport_size["width"] if page.viewport_size else VIEWPORT["width"]
    page.screenshot(path=path, full_page=True, clip={"x": 0, "y": 0, "width": width, "height": height})
    print(f"wrote {path}")


def shoot(
    base_url: str, creds: dict[str, Any], fns: dict[str, Any], workdir: Path, out: Path
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(60_000)
            sign_in(page, base_url, creds)

            page.goto(base_url + "/ui/")
            expect(page.locator("#functions-table")).to_contain_text("sensor-averages")
            page.locator("#filter").blur()
            save(page, out / "functions.png")

            page.goto(base_url + "/ui/upload")
            with page.expect_file_chooser() as chooser:
                page.click("#dropzone")
            zip_path = workdir / "flow-meter-export.zip"
            _zip(workdir / "sensor-averages" / "handler.py", zip_path)
            chooser.value.set_files(str(zip_path))
            page.fill("#name", "flow-meter-export")
            page.fill("#external_id", "flow-meter-export")
            page.fill("#description", "Exports flow meter readings to the data lake every hour")
            page.fill("#owner", "data-team")
            page.fill("#env_vars", "TARGET=lake\nBATCH_SIZE=500")
            page.fill("#secrets", "lake-token=…")
            page.locator("#owner").focus()
            save(page, out / "upload.png")

            fn = fns["sensor-averages"]
            page.goto(f"{base_url}/ui/functions/{fn.id}")
            expect(page.locator("#status-badge")).to_have_text("Ready")
            page.fill("#call-data", '{"readings": {"p-101": [4.2, 4.4, 4.1], "p-103": [7.9, 8.1]}}')
            page.click("#call-button")
            expect(page.locator("#call-status")).to_have_text("Completed")
            expect(page.locator("tr.call-row").first).to_contain_text("Completed")
            page.locator("tr.call-row").nth(1).click()
            expect(page.locator("tr.call-detail .call-logs").first).to_contain_text("averaging")
            page.locator("#call-button").blur()
            save(page, out / "function.png")

            page.goto(f"{base_url}/ui/functions/{fns['legacy-import'].id}")
            expect(page.locator("#deploy-error-trace")).to_contain_text(
                "pandas_that_does_not_exist"
            )
            save(page, out / "deploy-failed.png")

            page.goto(base_url + "/ui/failed")
            expect(page.locator("#failed-table")).to_contain_text("pump-health-check")
            save(page, out / "failed.png")

            phone = browser.new_page(viewport=PHONE)
            phone.set_default_timeout(60_000)
            sign_in(phone, base_url, creds)
            phone.goto(base_url + "/ui/")
            expect(phone.locator("#functions-table")).to_contain_text("sensor-averages")
            phone.locator("#filter").blur()
            save(phone, out / "phone-functions.png", PHONE_MAX_HEIGHT)
            phone.goto(f"{base_url}/ui/functions/{fns['pump-health-check'].id}")
            expect(phone.locator("#status-badge")).to_have_text("Ready")
            phone.fill("#call-data", '{"pump": "p-105", "pressure": 5.1}')
            phone.click("#call-button")
            expect(phone.locator("#call-status")).to_have_text("Completed")
            phone.locator("#call-button").blur()
            save(phone, out / "phone-function.png", PHONE_MAX_HEIGHT)
        finally:
            browser.close()


def _zip(handler: Path, dest: Path) -> None:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(handler, "handler.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fnhost-screenshots-") as tmp:
        workdir = Path(tmp)
        server = LiveServer(workdir / "home").start()
        try:
            creds = server.create_client("screenshots")
            client = sdk_client(creds, client_name="fnhost-screenshots")
            print("deploying and calling the example functions…")
            fns = seed(client, workdir)
            shoot(server.base_url, creds, fns, workdir, args.out)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
