// Drives the seed front end's stand-in (seed_page.html, served by the Rust
// test from another loopback origin than weir) in headless Chromium with
// playwright-core, as a person would: Send, watch it stream, Cancel once,
// Send again, reload mid-reply, watch it finish. Run by tests/tests/browser.rs.
//
//   node tests/browser/seed.mjs PAGE_URL CANCEL_PROMPT RELOAD_PROMPT
//
// Prints one line `RESULT {json}` with what it saw and exits 0; on a failure
// prints the reason to stderr, saves a screenshot, exits 1.
// Environment: CHROMIUM_PATH (default /usr/bin/chromium).

import { launchChromium, runDriver } from "./launch.mjs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const WAIT_MS = 20000; // the longest single wait
const OVERALL_MS = 90000; // the whole run

const [pageUrl, promptCancel, promptReload] = process.argv.slice(2);
if (!pageUrl || !promptCancel || !promptReload) {
  console.error("usage: node seed.mjs PAGE_URL CANCEL_PROMPT RELOAD_PROMPT");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";


const result = {};
const pageErrors = [];
const consoleErrors = [];
let browser;
let page;

// The page's state and its assistant bubbles, as plain data.
async function look() {
  return page.evaluate(() => {
    const s = document.getElementById("state").dataset;
    return {
      loading: s.loading,
      connected: s.connected,
      streaming: s.streaming,
      sending: s.sending,
      cancelShown: !document.getElementById("cancel").hidden,
      inputDisabled: document.getElementById("input").disabled,
      bubbles: [...document.querySelectorAll(".msg")].map((el) => ({
        id: el.dataset.messageId,
        role: el.classList.contains("user") ? "user" : "assistant",
        complete: el.dataset.complete === "true",
        text: el.textContent,
      })),
      seed: window.seed,
    };
  });
}

async function waitFor(what, pred) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const v = await look();
    const got = pred(v);
    if (got) return { v, got };
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; the page is ${JSON.stringify(v)}`);
    await page.waitForTimeout(15);
  }
}

const assistant = (v, id) => v.bubbles.find((b) => b.role === "assistant" && (!id || b.id === id));
const lastAssistant = (v) => v.bubbles.filter((b) => b.role === "assistant").pop();
const ready = (v) => v.loading === "false" && v.connected === "true";

async function send(text) {
  await page.fill("#input", text);
  await page.click("#send", { timeout: WAIT_MS });
}

async function main() {
  browser = await launchChromium(executablePath, WAIT_MS);
  const context = await browser.newContext();
  page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(m.text());
  });
  await page.goto(pageUrl);
  await waitFor("the history to load (the spinner to go)", ready);

  // 1. Send; the reply streams as growing text; one click on Cancel ends it.
  await send(promptCancel);
  const { got: first } = await waitFor("a streaming reply with text", (v) => {
    const a = assistant(v);
    return a && !a.complete && a.text.length > 0 && v.cancelShown && a;
  });
  const samples = [first.text];
  await waitFor("the streaming text to grow twice", (v) => {
    const a = assistant(v, first.id);
    if (a && a.text !== samples[samples.length - 1]) samples.push(a.text);
    return samples.length >= 3;
  });
  await page.click("#cancel", { timeout: WAIT_MS });
  const { v: ended } = await waitFor("the bubble to end", (v) => assistant(v, first.id)?.complete);
  await page.waitForTimeout(300);
  const later = await look();
  result.cancel = {
    message_id: first.id,
    samples,
    text: assistant(ended, first.id).text,
    text_later: assistant(later, first.id).text,
    complete_later: assistant(later, first.id).complete,
    cancel_shown: later.cancelShown,
    input_disabled: later.inputDisabled,
    cancel_posts: later.seed.cancelPosts,
    cancel_answers: later.seed.cancelAnswers,
  };

  // 2. Send again (not busy); reload mid-reply: the reply comes back and
  // finishes, once.
  await send(promptReload);
  const { got: second } = await waitFor("the second reply to stream a few words", (v) => {
    const a = lastAssistant(v);
    return a && a.id !== first.id && !a.complete && a.text.split(" ").length > 3 && a;
  });
  await page.reload();
  await waitFor("the history to load after the reload", ready);
  const after = await look();
  const { v: done } = await waitFor("the reloaded reply to complete", (v) => assistant(v, second.id)?.complete);
  await page.waitForTimeout(300);
  const final = await look();
  result.reload = {
    message_id: second.id,
    before_len: second.text.length,
    after_shown: Boolean(assistant(after, second.id)),
    text: assistant(done, second.id).text,
    text_later: assistant(final, second.id).text,
    bubbles: final.bubbles.map((b) => ({ id: b.id, role: b.role, complete: b.complete })),
    cancel_shown: final.cancelShown,
    input_disabled: final.inputDisabled,
  };
  result.first_text_after_reload = assistant(final, first.id)?.text ?? null;
  result.parse_errors = final.seed.parseErrors;
  result.alerts = final.seed.alerts;
  result.page_errors = pageErrors;
  result.console_errors = consoleErrors;
}

await runDriver({
  name: "seed.mjs",
  overallMs: OVERALL_MS,
  main,
  result,
  pageErrors,
  page: () => page,
  shot: join(tmpdir(), `weir-seed-browser-failure-${process.pid}.png`),
  browser: () => browser,
});
