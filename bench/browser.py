"""The consumer page in headless Chromium under load.

4. A backlog drained as fast as LocalStack allows (the target is 1,000 msg/s for 10 s): every
   message counted by the page, list rows bounded, no long task over 200 ms (PerformanceObserver).
6. The embedded default: a burst of 1,000 sent from the page, delivered to the page in <= 10 s.

    .venv/bin/python -m bench.browser [N]
"""

from __future__ import annotations

import shutil
import sys
import time

from bench.common import localstack, machine, prefill
from tests.servers import CHROMIUM_FLAGS, AppProcess, endpoint_env, wait_until

OBSERVE_LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
}).observe({type: "longtask", buffered: true});
"""


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.add_init_script(OBSERVE_LONG_TASKS)
    page.goto(url)
    page.wait_for_selector("#connection.badge.on", timeout=15000)
    return page


def shown(page) -> int:
    return int(page.text_content("#count-shown"))


def backlog(browser, count: int) -> None:
    with localstack() as endpoint:
        name = endpoint.queue_name("page")
        url = endpoint.client.create_queue(QueueName=name, Attributes={"DelaySeconds": "10"})["QueueUrl"]
        app = AppProcess(endpoint_env(endpoint, name, APP_MODE="consumer", POLLERS="4", HISTORY_SIZE="0",
                                      WAIT_TIME_SECONDS="1", LOG_LEVEL="WARNING"))
        try:
            app.wait_healthy()
            page = open_page(browser, app.base_url)
            visible_at = time.perf_counter() + 10
            prefill(endpoint, url, count)
            wait_until(lambda: shown(page) >= count, 300, f"{count} messages on the page", interval=0.1)
            elapsed = time.perf_counter() - visible_at
            rows = page.locator("#messages li").count()
            long_tasks = page.evaluate("window.__longTasks")
            print(f"\n4. Consumer page, backlog of {count} on LocalStack, POLLERS=4  ({machine()})")
            print(f"   counted on the page: {shown(page)} of {count}  (target: all)")
            print(f"   rate reaching the page: {count / elapsed:.0f} msg/s over {elapsed:.1f} s  "
                  f"(target 1000 msg/s; compare the plain boto3 loop of bench.consumer_drain on the same machine)")
            print(f"   list rows: {rows}  (target: bounded, 200)")
            print(f"   long tasks: {len(long_tasks)}, longest {max(long_tasks, default=0):.0f} ms  "
                  f"(target: none over 200 ms)")
        finally:
            app.stop()


def embedded_burst(browser) -> None:
    app = AppProcess({"LOG_LEVEL": "WARNING"})   # no endpoint: the embedded moto server
    try:
        app.wait_healthy()
        page = open_page(browser, app.base_url)
        page.fill("#message", "burst from the page")
        page.fill("#count", "1000")
        started = time.perf_counter()
        page.click("#send")
        wait_until(lambda: shown(page) >= 1000, 120, "1000 messages on the page", interval=0.05)
        elapsed = time.perf_counter() - started
        long_tasks = page.evaluate("window.__longTasks")
        print(f"\n6. Embedded default: burst of 1000 from the page  ({machine()})")
        print(f"   delivered to the page in {elapsed:.1f} s  (target <= 10 s)")
        print(f"   long tasks: {len(long_tasks)}, longest {max(long_tasks, default=0):.0f} ms")
    finally:
        app.stop()


def main() -> None:
    from playwright.sync_api import sync_playwright

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    executable = shutil.which("chromium") or sys.exit("Chromium not found (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, headless=True)
        try:
            backlog(browser, count)
            embedded_burst(browser)
        finally:
            browser.close()


if __name__ == "__main__":
    sys.exit(main())
