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
