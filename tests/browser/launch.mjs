// Starts Debian's Chromium headless for the browser tests, with the flags
// every driver here uses. (playwright-core adds --headless and a fresh
// temporary --user-data-dir.)
import { chromium } from "playwright-core";

export function launchChromium(executablePath, timeout) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout,
  });
}

// Runs a driver's `main` under a watchdog of `overallMs`, prints
// `RESULT {json}` on success, or the error, what `result` holds so far and a
// screenshot of `page()` (to `shot`) on failure; closes `browser()`; exits
// 0 or 1.
export async function runDriver({ name, overallMs, main, result, pageErrors, page, shot, browser }) {
  const watchdog = setTimeout(() => {
    console.error(`${name}: gave up after ${overallMs} ms`);
    process.exit(1);
  }, overallMs);
  let code = 0;
  try {
    await main();
    console.log(`RESULT ${JSON.stringify(result)}`);
  } catch (e) {
    code = 1;
    console.error(`${name}: ${e && e.stack ? e.stack : e}`);
    console.error(`${name}: so far ${JSON.stringify(result)}; page errors ${JSON.stringify(pageErrors)}`);
    const p = page();
    if (p) {
      try {
        await p.screenshot({ path: shot, fullPage: true });
        console.error(`${name}: screenshot of the page at ${shot}`);
      } catch (_) {
        // no screenshot then
      }
    }
  } finally {
    clearTimeout(watchdog);
    const b = browser();
    if (b) await b.close().catch(() => {});
  }
  process.exit(code);
}
