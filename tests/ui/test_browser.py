"""End to end in headless Chromium (Debian's, through Playwright) against a real HTTP server.

A marketer signs in, writes a segment with a typo and sees the error, fixes it and sees the count,
builds an SMS campaign with two variants, previews it, launches it against FakeTwilio (the real
twilio client), and watches the campaign page fill while the test drains the queues, posts
conversions and Twilio's signed delivery receipts. An admin then walks the main pages at phone
width: no sideways scrolling, every control labelled. Screenshots go to artifacts/ui/.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.conftest import Api
from tests.ui.conftest import PASSWORD, make_account

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "ui"
USERS = 30

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Live:
    url: str
    app: object
    api: Api
    app_id: int


@pytest.fixture
def live(clean_db, redis_conn, settings, fake_twilio):
    """`tidings serve` in a thread: the real app over HTTP, sending SMS through FakeTwilio."""
    from scheduler.send import close_channels
    from tidings.app import create_app
    from tidings.apps import create_app_record
    from tidings.db import session_scope

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    provider = dataclasses.replace(
        settings, public_base_url=url, twilio_account_sid=fake_twilio.account_sid,
        twilio_auth_token=fake_twilio.auth_token, twilio_from="+15005550006", twilio_api_base_url=fake_twilio.url)
    application = create_app(provider)
    server = make_server("127.0.0.1", port, application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    with session_scope() as s:
        record, server_key, _ = create_app_record(s, "Shop")
        app_id = record.id
    api = Api(application.test_client(), app_id, server_key)
    users = [{"external_id": f"u{i}", "phone": f"+1415555{i:04d}", "sms_opt_in": True, "timezone": "UTC",
              "attributes": {"first_name": f"Ana{i}", "tier": "gold" if i % 3 == 0 else "basic"}} for i in range(USERS)]
    assert api.post("/users/batch", json={"users": users}).status_code == 200
    yield Live(url, application, api, app_id)
    server.shutdown()
    thread.join(10)
    close_channels()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium (never `playwright install`)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_page(browser, width=1280, height=900):
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # 4xx answers are expected (the live count of a query with a typo is a 422); anything else is not.
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and "responded with a status of 4" not in msg.text else None)
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations of launch, cancel...
    return page, problems


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page, url: str, email: str) -> None:
    page.goto(f"{url}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")


def drain() -> None:
    from scheduler import queues

    queues.make_worker().work(burst=True, with_scheduler=False, logging_level="WARNING")


def test_a_marketer_segments_builds_launches_and_watches_an_sms_campaign(live, browser, fake_twilio):
    from scheduler import runner

    make_account("marketer@tidings.test", "marketer")
    page, problems = open_page(browser)
    page.goto(live.url + "/campaigns")
    assert "/login" in page.url
    shot(page, "01-login")
    sign_in(page, live.url, "marketer@tidings.test")
    shot(page, "02-overview")

    # A segment with a typo: the error is shown and underlined where it is; fixed, the count shows.
    page.get_by_role("link", name="Segments").first.click()
    page.get_by_role("link", name="New segment").click()
    page.get_by_label("Name").fill("Gold")
    query = page.locator("#query")
    typo = 'attr.tier = "gold" and sms_optin = true'
    query.fill(typo)
    problem = page.locator("#query-status .problem")
    problem.wait_for()
    assert problem.inner_text().startswith(f"Error at character {typo.index('sms_optin') + 1}:")
    assert page.locator("#query-mirror mark").inner_text() == "sms_optin"
    shot(page, "03-segment-typo")
    query.fill('attr.tier = "gold" and sms_opt_in = true')
    count = page.locator("#query-status .count")
    count.wait_for()
    assert count.get_attribute("data-count") == str(len(range(0, USERS, 3)))
    assert page.locator("#query-mirror mark").count() == 0
    assert "u0" in page.locator("#query-sample").inner_text()
    # The builder writes queries too.
    page.locator("#builder-rows select").nth(1).select_option("platform")
    page.locator("#builder-rows select").nth(3).select_option("ios")
    assert page.locator("#builder-out").inner_text() == 'platform = "ios"'
    shot(page, "04-segment-count")
    page.get_by_role("button", name="Save segment").click()
    page.wait_for_url(re.compile(r"/segments/\d+$"))
    page.wait_for_function("() => document.querySelector('[data-churn=users]').textContent === '10'")

    # An SMS campaign with two variants, previewed for one user, saved, launched.
    page.get_by_role("link", name="Segments").first.click()
    page.wait_for_function("() => document.querySelector('[data-size-url]').dataset.count === '10'")
    page.get_by_role("link", name="Campaigns").first.click()
    page.get_by_role("link", name="New campaign").click()
    page.locator("#c-name").fill("Spring SMS")
    page.locator("#c-audience").fill("sms_opt_in = true")
    page.locator("#c-quiet").uncheck()  # send now, whatever the hour in UTC
    target = page.locator("[data-target]").first
    target.locator('[data-key="control_percent"]').fill("20")
    target.locator('[data-key="body"]').first.fill("Hi {{ user.first_name }}, 20% off today")
    target.get_by_role("button", name="Add a variant").click()
    target.locator('[data-variant]').nth(1).locator('[data-key="body"]').fill("Spring sale: 20% off")
    page.locator("#c-conv-event").fill("purchase")
    # A template error is shown next to the variant's message.
    target.locator('[data-variant]').nth(1).locator('[data-key="body"]').fill("Spring {{ oops")
    page.get_by_role("button", name="Save draft").click()
    error = page.locator('[data-variant]').nth(1).locator(".js-err")
    error.wait_for()
    assert "content.body" in error.inner_text() or "line 1" in error.inner_text()
    target.locator('[data-variant]').nth(1).locator('[data-key="body"]').fill("Spring sale: 20% off")
    page.locator("#pv-user").fill("u1")
    page.get_by_role("button", name="Preview").click()
    page.locator("#pv-out [data-preview], #pv-out p").first.wait_for()
    page.wait_for_function("() => document.querySelector('#pv-out').innerText.includes('Target 1')")
    preview_text = page.locator("#pv-out").inner_text()
    assert "Hi Ana1, 20% off today" in preview_text or "Spring sale: 20% off" in preview_text or "control group" in preview_text
    shot(page, "05-campaign-editor")
    page.get_by_role("button", name="Save draft").click()
    page.wait_for_url(re.compile(r"/campaigns/\d+$"))
    campaign_id = int(page.url.rsplit("/", 1)[1])
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url(re.compile(rf"/campaigns/{campaign_id}$"))
    assert "is running" in page.locator(".flash").inner_text()

    # The send happens while the page polls: progress, then receipts and conversions.
    drain()
    page.wait_for_function(
        f"() => {{ const p = document.querySelector('#send-progress'); return p && p.max == {USERS} && p.value == {USERS}; }}",
        timeout=20_000)
    sent = fake_twilio.messages
    assert 15 <= len(sent) < USERS
    buyers = [m.to for m in sent][:8]
    events = [{"user": f"u{int(to[-4:])}", "name": "purchase"} for to in buyers]
    assert live.api.post("/events", json={"events": events}).status_code == 202
    for message in sent:
        assert fake_twilio.status_callback_request(message, "delivered").post() in (200, 204)
    page.wait_for_function(
        f"() => document.querySelector('[data-total=\"delivered\"]').textContent.trim() == '{len(sent)}'", timeout=20_000)
    page.wait_for_function("() => document.querySelector('[data-total=\"converted\"]').textContent.trim() == '8'",
                           timeout=20_000)
    assert page.locator("p.verdict").count() >= 1
    assert page.locator("canvas[data-chart]").count() >= 3
    runner.tick()
    page.reload()
    assert "finished" in page.locator("h1 + p").inner_text()
    shot(page, "06-campaign-results")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.startswith("target,segment,arm,users") and ",A," in csv_text and ",B," in csv_text

    for path, name in [("/campaigns", "07-campaigns"), ("/hooks", "08-hooks"), ("/people", "09-users"),
                       ("/people/u1", "10-user")]:
        page.goto(live.url + path)
        shot(page, name)
    assert not problems, problems


UNLABELLED = """() => Array.from(document.querySelectorAll('input, select, textarea'))
  .filter(e => e.type !== 'hidden' && e.offsetParent !== null)
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby'))
  .map(e => e.outerHTML.slice(0, 120))"""


def test_every_main_page_works_at_phone_width_with_labelled_controls(live, browser):
    make_account("admin@tidings.test", "admin")
    live.api.post("/segments", json={"name": "Gold", "query": 'attr.tier = "gold"'})
    live.api.post("/hooks", json={"key": "banner", "type": "string", "default": "blue"})
    campaign = live.api.post("/campaigns", json={
        "name": "Phone check", "channel": "sms", "targets": [
            {"control_percent": 10, "variants": [{"name": "A", "content": {"body": "Hi"}},
                                                 {"name": "B", "content": {"body": "Hello"}}]}]}).json
    page, problems = open_page(browser, width=375, height=812)
    sign_in(page, live.url, "admin@tidings.test")
    pages = [("/", "phone-overview"), ("/segments", "phone-segments"), ("/segments/new", "phone-segment-editor"),
             ("/campaigns", "phone-campaigns"), ("/campaigns/new", "phone-campaign-editor"),
             (f"/campaigns/{campaign['id']}", "phone-campaign"), (f"/campaigns/{campaign['id']}/edit", None),
             ("/hooks", "phone-hooks"), ("/hooks/banner", None), ("/people", "phone-users"), ("/people/u3", None),
             ("/admin/apps", "phone-apps"), (f"/admin/apps/{live.app_id}", "phone-app-settings"),
             ("/admin/accounts", "phone-accounts")]
    for path, name in pages:
        page.goto(live.url + path)
        page.wait_for_load_state("networkidle")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{path} scrolls sideways by {overflow}px at 375px"
        assert page.evaluate(UNLABELLED) == [], path
        if name:
            shot(page, name)
    # An in-app message previews inside a sandboxed frame: no scripts, no access to the page.
    page.goto(live.url + "/campaigns/new?channel=inapp")
    page.locator('[data-key="control_percent"]').fill("0")
    page.locator('[data-key="title"]').first.fill("Welcome back {{ user.first_name }}")
    page.locator('[data-key="body"]').first.fill("Your basket misses you.")
    page.locator('[data-key="buttons"]').first.fill("Shop now | app://shop")
    page.locator("#pv-user").fill("u3")
    page.get_by_role("button", name="Preview").click()
    frame = page.locator("iframe[data-preview=inapp]")
    frame.wait_for()
    assert frame.get_attribute("sandbox") == ""
    inner = page.frame_locator("iframe[data-preview=inapp]")
    assert inner.locator("h1").inner_text() == "Welcome back Ana3"
    assert inner.locator(".btns span").inner_text() == "Shop now"
    shot(page, "phone-inapp-preview")
    assert not problems, problems
