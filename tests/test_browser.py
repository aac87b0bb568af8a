"""The pages in real headless Chromium: type a message on the producer page, watch it arrive live on
the consumer page; markup in messages stays text. Screenshots land in docs/screenshots for the README."""

import pytest

from tests.conftest import ROOT, endpoint_env, wait_until

SCREENSHOTS = ROOT / "docs" / "screenshots"
XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold?</b>'


def new_page(browser, bypass_csp=False):
    page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=bypass_csp)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    return page


def wait_connected(page):
    page.wait_for_selector("#connection.badge.on", timeout=15000)


@pytest.mark.parametrize("async_mode", ["threading", "eventlet"])
def test_send_on_producer_page_and_see_it_live_on_consumer_page(localstack_endpoint, start_app, browser, async_mode):
    name = localstack_endpoint.queue_name()
    consumer = start_app(**endpoint_env(localstack_endpoint, name, APP_MODE="consumer", ASYNC_MODE=async_mode,
                                        CONSUMER_NAME="consumer-pod"))
    producer = start_app(**endpoint_env(localstack_endpoint, name, APP_MODE="producer", ASYNC_MODE=async_mode))
    consumer_page, producer_page = new_page(browser), new_page(browser)
    consumer_page.goto(consumer.base_url)
    wait_connected(consumer_page)
    producer_page.goto(producer.base_url)

    producer_page.fill("#message", '{"order": 42, "note": "from the page"}')
    producer_page.click("#add-attribute")
    producer_page.fill("#attributes .attr-name", "user")
    producer_page.fill("#attributes .attr-value", "me")
    producer_page.click("#send")
    producer_page.wait_for_selector("#produce-result.ok", timeout=15000)
    assert producer_page.text_content("#produce-result") == "sent 1 message"
    assert producer_page.locator("#sent li").count() == 1

    row = consumer_page.wait_for_selector("#messages li", timeout=20000)
    assert '"order": 42' in row.text_content() and "user (String) = me" in row.text_content()
    assert "consumer-pod" in row.text_content()
    wait_until(lambda: consumer_page.text_content("#count-deleted") == "1", 10, "deleted counter")
    assert consumer.get("/status").json()["browsers"] == {"connected": 1, "max": 40, "lagging": 0}, \
        "the page confirmed the batch (the consumer deletes it after that)"
    assert consumer_page.text_content("#backend") == "endpoint"
    assert producer_page.errors == [] and consumer_page.errors == []
    if async_mode == "threading":
        producer_page.screenshot(path=str(SCREENSHOTS / "producer.png"))
        consumer_page.screenshot(path=str(SCREENSHOTS / "consumer.png"))


@pytest.mark.parametrize("async_mode", ["threading", "eventlet"])
def test_markup_in_messages_is_shown_as_text(localstack_endpoint, start_app, browser, async_mode):
    app = start_app(**endpoint_env(localstack_endpoint, localstack_endpoint.queue_name(), ASYNC_MODE=async_mode))
    # Without the CSP safety net, so that only the page's own rendering keeps markup inert.
    page = new_page(browser, bypass_csp=True)
    page.goto(app.base_url)
    wait_connected(page)
    response = app.post("/produce", json={"message": XSS, "attributes": {"x": XSS}})
    assert response.status_code == 200
    row = page.wait_for_selector("#messages li", timeout=20000)
    assert XSS in row.text_content()
    assert page.locator("#messages img, #messages script, #messages b").count() == 0
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None


def test_burst_from_the_page_shows_progress_and_bounded_rows(start_app, browser):
    app = start_app()   # what `make run` starts: the embedded endpoint
    page = new_page(browser)
    page.goto(app.base_url)
    wait_connected(page)
    page.fill("#message", "burst")
    page.fill("#count", "250")
    page.click("#send")
    page.wait_for_selector("#produce-result.ok", timeout=30000)
    assert page.text_content("#produce-result") == "sent 250 messages"
    assert page.eval_on_selector("#progress", "p => p.value") == 250
    wait_until(lambda: page.text_content("#count-shown") == "250", 30, "250 shown in the tab")
    wait_until(lambda: page.text_content("#count-received") == "250", 10, "250 received")
    assert page.locator("#messages li").count() == 200  # bounded
    wait_until(lambda: page.text_content("#sqs-state").startswith("ready"), 10, "SQS state on the page")
    page.screenshot(path=str(SCREENSHOTS / "all-in-one.png"))


def test_bad_input_on_the_page_names_the_field_and_sends_nothing(moto_endpoint, start_app, browser):
    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name()))
    page = new_page(browser)
    page.goto(app.base_url)
    wait_connected(page)
    page.fill("#message", "hello")
    page.click("#add-attribute")
    page.fill("#attributes .attr-name", "AWS.reserved")
    page.fill("#attributes .attr-value", "v")
    page.click("#send")
    page.wait_for_selector("#produce-result.error", timeout=10000)
    assert page.text_content("#produce-result").startswith("attributes.AWS.reserved:")
    page.fill("#message", "")
    page.click("#attributes .remove")
    page.click("#send")
    wait_until(lambda: page.text_content("#produce-result").startswith("message:"), 10, "the message error")
    assert page.locator("#sent li").count() == 0
    assert app.get("/status").json()["stats"]["received"] == 0


def test_the_same_attribute_name_twice_is_refused_on_the_page(moto_endpoint, start_app, browser):
    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name(), APP_MODE="producer"))
    page = new_page(browser)
    page.goto(app.base_url)
    page.fill("#message", "hello")
    for value in ("me", "someone-else"):
        page.click("#add-attribute")
        page.locator("#attributes .attr-name").last.fill("user")
        page.locator("#attributes .attr-value").last.fill(value)
    page.click("#send")
    page.wait_for_selector("#produce-result.error", timeout=5000)
    assert page.text_content("#produce-result") == "attributes.user: the same attribute name twice"
    assert page.locator("#sent li").count() == 0


def test_producer_page_shows_an_unreachable_sqs(start_app, browser):
    app = start_app(**{"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "APP_MODE": "producer",
                       "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "QUEUE_NAME": "nowhere"})
    page = new_page(browser)
    page.goto(app.base_url)
    wait_until(lambda: page.text_content("#sqs-state").startswith("not reachable"), 15, "the SQS problem shown")
    assert "badge off" in page.get_attribute("#sqs-state", "class")


def test_attribute_rows_fit_their_panel(start_app, browser):
    app = start_app()
    for width in (1280, 375):
        page = browser.new_page(viewport={"width": width, "height": 800})
        page.goto(app.base_url)
        page.click("#add-attribute")
        panel = page.locator("#producer").bounding_box()
        remove = page.locator("#attributes .remove").bounding_box()
        assert remove["x"] + remove["width"] <= panel["x"] + panel["width"], width
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), width
        page.close()


def test_a_poison_message_is_shown_failing_then_dead_lettered(localstack_endpoint, start_app, browser):
    name = localstack_endpoint.queue_name("poison")
    app = start_app(**endpoint_env(localstack_endpoint, name, MAX_RECEIVE_COUNT=2, WAIT_TIME_SECONDS=1))
    page = new_page(browser)
    page.goto(app.base_url)
    wait_connected(page)
    assert app.post("/produce", json={"message": "poison", "attributes": {"simulate_failure": "yes"}}).status_code == 200
    wait_until(lambda: page.locator("#messages li.failed").count() == 2, 30, "two failed attempts on the page")
    first, last = (page.locator("#messages li.failed").nth(i).text_content() for i in (1, 0))  # newest first
    assert "attempt 1 of 2" in first and "left on the queue for redelivery" in first
    assert "attempt 2 of 2" in last and f"dead-letter queue {name}-dlq" in last
    wait_until(lambda: page.text_content("#count-failed") == "2", 5, "the failed counter")
    assert page.text_content("#count-deleted") == "0"
    wait_until(lambda: "dead-letter queue: 1" in page.text_content("#sqs-state"), 15, "the DLQ depth on the page")
    assert page.locator("#messages li:not(.failed)").count() == 0 and page.errors == []


def test_markup_in_fifo_group_and_deduplication_ids_is_shown_as_text(localstack_endpoint, start_app, browser):
    group = "<img/src=x/onerror=window.__pwned=3>"       # SQS allows these characters in ids
    app = start_app(**endpoint_env(localstack_endpoint, localstack_endpoint.queue_name(fifo=True)))
    page = new_page(browser, bypass_csp=True)
    page.goto(app.base_url)
    wait_connected(page)
    response = app.post("/produce", json={"message": "m", "group_id": group,
                                          "dedup_id": "<script>window.__pwned=4</script>"})
    assert response.status_code == 200, response.text
    row = page.wait_for_selector("#messages li", timeout=20000)
    assert f"group {group}" in row.text_content()
    assert page.locator("#messages img, #messages script").count() == 0
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None


def test_a_tab_over_max_browsers_says_why_it_is_not_connected(moto_endpoint, start_app, browser):
    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name(), MAX_BROWSERS=1))
    first, second = new_page(browser), new_page(browser)
    first.goto(app.base_url)
    wait_connected(first)
    second.goto(app.base_url)
    wait_until(lambda: second.text_content("#connection").startswith("too many tabs open (1 of MAX_BROWSERS=1)"),
               15, "the reason on the second tab")
    first.close()
    second.wait_for_selector("#connection.badge.on", timeout=30000)   # it gets the place once freed


def test_long_bodies_say_how_much_is_not_shown_live_and_in_history(moto_endpoint, start_app, browser):
    """A 15,000-character body: the live row and the history row (whose copy the server shortened
    to 10,000) both say exactly how many characters are not shown, and the JSON tag is right."""
    app = start_app(**endpoint_env(moto_endpoint, moto_endpoint.queue_name()))
    live = new_page(browser)
    live.goto(app.base_url)
    wait_connected(live)
    body = '["' + "x" * 14_996 + '"]'
    assert app.post("/produce", json={"message": body}).status_code == 200
    row = live.wait_for_selector("#messages li", timeout=15000)
    assert "(13000 more characters)" in row.text_content() and "JSON" in row.text_content()
    late = new_page(browser)
    late.goto(app.base_url)
    history_row = late.wait_for_selector("#messages li", timeout=15000)
    assert "(13000 more characters)" in history_row.text_content()
    # Characters, not UTF-16 units: 1,500 emoji are under the 2,000 shown; 2,500 are 500 over.
    for rows, (count, hidden) in enumerate(((1500, None), (2500, 500)), start=2):
        assert app.post("/produce", json={"message": "\U0001F600" * count}).status_code == 200
        live.locator("#messages li").nth(rows - 1).wait_for(timeout=15000)
        text = live.text_content("#messages li:nth-child(1) pre")
        assert text.count("\U0001F600") == min(count, 2000), text[:80]
        assert (f"({hidden} more characters)" in text) if hidden else "more characters" not in text
    assert live.errors == [] and late.errors == []
