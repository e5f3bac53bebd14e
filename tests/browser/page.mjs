// Drives weir's web page in a real headless Chromium (Debian's package) with
// playwright-core. Run by tests/tests/browser.rs; by hand:
//
//   npm ci --prefix tests/browser
//   weir serve --demo-chunks 100 --demo-rate 25 &
//   node tests/browser/page.mjs http://127.0.0.1:8080 "prompt one" "prompt two"
//
// Scenarios (each in its own conversation):
//   1. send a message; the reply streams (a `.msg.assistant` with
//      data-status="streaming" whose text grows); click Cancel; it shows
//      data-status="cancelled". Then Send and Cancel at once: cancelled too.
//   2. send a message; reload the page mid-reply; the same reply shows up
//      again, still streaming, and finishes (data-status="completed").
//
// Prints one line `RESULT {json}` with what it saw (the Rust test checks the
// texts against the demo generator and the server's history) and exits 0;
// on a failure prints the reason to stderr, saves a screenshot, exits 1.
// Environment: CHROMIUM_PATH (default /usr/bin/chromium).

import { launchChromium, runDriver } from "./launch.mjs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const WAIT_MS = 20000; // the longest single wait
const OVERALL_MS = 90000; // the whole run

const [base, promptCancel, promptReload] = process.argv.slice(2);
if (!base || !promptCancel || !promptReload) {
  console.error("usage: node page.mjs BASE_URL CANCEL_PROMPT RELOAD_PROMPT");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";


const suffix = `${Date.now().toString(36)}-${process.pid}`;
const result = {};
const pageErrors = [];
let browser;
let current; // the page in use, for the failure screenshot

function watch(page) {
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  current = page;
  return page;
}

// The assistant element of `id`, or else the last one, as plain data.
async function reply(page, id) {
  return page.evaluate((id) => {
    const el = id
      ? document.querySelector(`.msg.assistant[data-message-id="${id}"]`)
      : [...document.querySelectorAll(".msg.assistant")].pop();
    if (!el) return null;
    return {
      id: el.dataset.messageId || null,
      status: el.dataset.status || null,
      text: el.textContent,
      count: document.querySelectorAll(".msg.assistant").length,
    };
  }, id || null);
}

// Waits until `pred(reply)` holds for the reply `id` (or the last one).
async function waitReply(page, id, what, pred) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const r = await reply(page, id);
    if (r && pred(r)) return r;
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}; the reply is ${JSON.stringify(r)}`);
    }
    await page.waitForTimeout(20);
  }
}

async function open(page, session, user) {
  await page.goto(`${base}/#session=${encodeURIComponent(session)}&user=${encodeURIComponent(user)}`);
  await page.waitForSelector('#status[data-state="open"]', { timeout: WAIT_MS });
}

async function send(page, text) {
  await page.fill("#input", text);
  await page.click("#send", { timeout: WAIT_MS });
}

async function main() {
  browser = await launchChromium(executablePath, WAIT_MS);
  const context = await browser.newContext();

  // 1. Stream, then Cancel.
  const s1 = `br-cancel-${suffix}`;
  const page = watch(await context.newPage());
  await open(page, s1, "alice");
  await send(page, promptCancel);
  const first = await waitReply(page, null, "a streaming reply with text", (r) =>
    r.id && r.status === "streaming" && r.text.length > 0,
  );
  const grown = await waitReply(page, first.id, "the streaming text to grow", (r) =>
    r.status === "streaming" && r.text.length > first.text.length,
  );
  await page.click("#cancel", { timeout: WAIT_MS });
  const cancelled = await waitReply(page, first.id, "the cancelled state", (r) => r.status === "cancelled");
  // Nothing is appended after the cancelled state shows.
  await page.waitForTimeout(300);
  const settled = await reply(page, first.id);
  result.cancel = {
    session: s1,
    message_id: first.id,
    first_len: first.text.length,
    grown_len: grown.text.length,
    status: cancelled.status,
    text: cancelled.text,
    text_later: settled.text,
    status_later: settled.status,
  };

  // 1b. Cancel right after Send, before any reply id is known.
  await send(page, `${promptCancel} again`);
  await page.click("#cancel", { timeout: WAIT_MS });
  const quick = await waitReply(page, null, "the quick cancel's cancelled state", (r) =>
    r.id && r.id !== first.id && r.status === "cancelled",
  );
  result.quick_cancel = { message_id: quick.id, status: quick.status, text: quick.text };

  // 2. Reload mid-reply.
  const s2 = `br-reload-${suffix}`;
  const page2 = watch(await context.newPage());
  await open(page2, s2, "bob");
  await send(page2, promptReload);
  const before = await waitReply(page2, null, "the reply to stream a few chunks", (r) =>
    r.id && r.status === "streaming" && r.text.split(" ").length > 3,
  );
  await page2.reload();
  await page2.waitForSelector('#status[data-state="open"]', { timeout: WAIT_MS });
  const after = await waitReply(page2, before.id, "the same reply after the reload", () => true);
  const continued = await waitReply(page2, before.id, "the reply to grow after the reload", (r) =>
    r.status !== "streaming" || r.text.length > after.text.length,
  );
  const done = await waitReply(page2, before.id, "the reply to complete", (r) => r.status === "completed");
  result.reload = {
    session: s2,
    message_id: before.id,
    before_len: before.text.length,
    after_status: after.status,
    after_len: after.text.length,
    continued_status: continued.status,
    continued_len: continued.text.length,
    status: done.status,
    text: done.text,
    assistant_count: done.count,
  };
  result.page_errors = pageErrors;
}

await runDriver({
  name: "page.mjs",
  overallMs: OVERALL_MS,
  main,
  result,
  pageErrors,
  page: () => current,
  shot: join(tmpdir(), `weir-browser-failure-${process.pid}.png`),
  browser: () => browser,
});
