// Drives the useChat example app (examples/ai-sdk-chat, built by the Rust test
// and served from another loopback origin than weir) in headless Chromium
// with playwright-core, as a person would. Run by tests/tests/ai_sdk_app.rs.
//
//   node tests/browser/ai_sdk_app.mjs PAGE_URL STOP_PROMPT RELOAD_PROMPT SCREENSHOT
//
// PAGE_URL names weir, the transport and the chat (`?weir=…&transport=…&chat=…`).
//   1. Send STOP_PROMPT; the reply streams (its text grows while
//      data-status="streaming"); click Stop; the reply ends (data-status
//      "cancelled"), and no text follows.
//   2. Send RELOAD_PROMPT; reload the page mid-reply; the same reply (same
//      id) shows up again, goes on streaming and completes, once.
// Saves a screenshot of the page at the end to SCREENSHOT. Prints one line
// `RESULT {json}` with what it saw (the Rust test checks the texts against
// weir's history) and exits 0; on a failure prints the reason to stderr,
// saves the screenshot, exits 1. Environment: CHROMIUM_PATH (default
// /usr/bin/chromium), OVERALL_MS (how long the whole run may take; 150 s).

import { launchChromium, runDriver } from "./launch.mjs";

const WAIT_MS = 30000; // the longest a wait goes on with nothing changing on the page
// The whole run: a reply of a real model on a busy machine takes a while.
const OVERALL_MS = Number(process.env.OVERALL_MS) || 150000;
const QUIET_MS = 500; // how long to watch that nothing follows an end

const [pageUrl, promptStop, promptReload, screenshot] = process.argv.slice(2);
if (!pageUrl || !promptStop || !promptReload || !screenshot) {
  console.error("usage: node ai_sdk_app.mjs PAGE_URL STOP_PROMPT RELOAD_PROMPT SCREENSHOT");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";


const result = {};
const pageErrors = [];
let browser;
let page;

// The page as plain data: useChat's status and the messages shown.
async function look() {
  return page.evaluate(() => {
    const main = document.querySelector("main");
    return {
      status: main ? main.dataset.status : null,
      alert: document.querySelector("[role=alert]")?.textContent ?? null,
      messages: [...document.querySelectorAll("li[data-role]")].map((li) => ({
        id: li.dataset.id,
        role: li.dataset.role,
        status: li.dataset.status ?? null,
        text: li.textContent,
      })),
    };
  });
}

// Waits until `pred(page)` holds, as long as the page keeps changing (a
// streaming reply does), and at most WAIT_MS after its last change.
async function waitFor(what, pred) {
  let deadline = Date.now() + WAIT_MS;
  let seen = "";
  for (;;) {
    const v = await look();
    if (v.alert) throw new Error(`the page shows an error while waiting for ${what}: ${v.alert}`);
    const got = pred(v);
    if (got) return { v, got };
    const now = JSON.stringify(v);
    if (now !== seen) [seen, deadline] = [now, Date.now() + WAIT_MS];
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; the page is ${now}`);
    await page.waitForTimeout(15);
  }
}

const assistant = (v, id) => v.messages.filter((m) => m.role === "assistant" && (!id || m.id === id)).pop();
const ready = (v) => v.status === "ready";

async function send(text) {
  await page.fill("input[name=text]", text, { timeout: WAIT_MS });
  await page.getByRole("button", { name: "Send", exact: true }).click({ timeout: WAIT_MS });
}

const ENDED = ["completed", "cancelled", "failed"];

// Samples the reply `id` until it shows how it ended; returns the texts
// seen while it streamed (each new one added to `samples`) and the page at
// its end.
async function followToEnd(id, what, samples = []) {
  const { v } = await waitFor(what, (v) => {
    const a = assistant(v, id);
    if (a?.status === "streaming" && a.text !== samples[samples.length - 1]) samples.push(a.text);
    return a && ENDED.includes(a.status) && ready(v);
  });
  return { samples, end: v };
}

async function main() {
  browser = await launchChromium(executablePath, WAIT_MS);
  page = await (await browser.newContext({ viewport: { width: 900, height: 900 } })).newPage();
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(pageUrl);
  await waitFor("the history to load", ready);

  // 1. Send; the reply streams as growing text; Stop ends it; nothing follows.
  await send(promptStop);
  const { got: first } = await waitFor("a streaming reply with text", (v) => {
    const a = assistant(v);
    return a?.status === "streaming" && a.text.length > 0 && a;
  });
  const samples = [first.text];
  await waitFor("the streaming text to grow twice", (v) => {
    const a = assistant(v, first.id);
    if (a && a.text !== samples[samples.length - 1]) samples.push(a.text);
    return samples.length >= 3;
  });
  await page.getByRole("button", { name: "Stop", exact: true }).click({ timeout: WAIT_MS });
  const stopped = await followToEnd(first.id, "the stopped reply to end", samples);
  await page.waitForTimeout(QUIET_MS);
  const later = await look();
  result.stop = {
    message_id: first.id,
    samples: stopped.samples,
    status: assistant(stopped.end, first.id).status,
    text: assistant(stopped.end, first.id).text,
    status_later: assistant(later, first.id)?.status ?? null,
    text_later: assistant(later, first.id)?.text ?? null,
  };

  // 2. Send again; reload mid-reply; the reply comes back, goes on, completes.
  await send(promptReload);
  const { got: second } = await waitFor("the second reply to stream a few words", (v) => {
    const a = assistant(v);
    return a && a.id !== first.id && a.status === "streaming" && a.text.split(" ").length > 3 && a;
  });
  await page.reload();
  const { got: back } = await waitFor("the reply to show again after the reload", (v) => assistant(v, second.id));
  const resumed = await followToEnd(second.id, "the reloaded reply to end");
  await page.waitForTimeout(QUIET_MS);
  const final = await look();
  result.reload = {
    message_id: second.id,
    before_text: second.text,
    first_after_reload: back.text,
    // How it went on after the reload: the lengths seen while it streamed,
    // and whether each text seen was a beginning of the final one.
    lengths_after_reload: resumed.samples.map((s) => s.length),
    prefixes_of_final: resumed.samples.every((s) => assistant(resumed.end, second.id).text.startsWith(s)),
    status: assistant(resumed.end, second.id).status,
    text: assistant(resumed.end, second.id).text,
    text_later: assistant(final, second.id)?.text ?? null,
  };
  result.messages = final.messages.map(({ id, role, status }) => ({ id, role, status }));
  result.stopped_text_after_reload = assistant(final, first.id)?.text ?? null;
  result.page_errors = pageErrors;
  await page.screenshot({ path: screenshot, fullPage: true });
  result.screenshot = screenshot;
}

await runDriver({
  name: "ai_sdk_app.mjs",
  overallMs: OVERALL_MS,
  main,
  result,
  pageErrors,
  page: () => page,
  shot: screenshot,
  browser: () => browser,
});
