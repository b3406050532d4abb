// The public page of a share link (`GET /s/{token}`) in a real browser: Debian's Chromium
// driven by playwright-core. The snapshot renders (Markdown included) on a phone-sized screen,
// hostile messages and titles show as text and never run, and a revoked link answers 410 on
// reload. Skipped when Chromium is not installed.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import type { TRPCClient } from "@trpc/client";
import { chromium, type Browser, type Page } from "playwright-core";
import type { AppRouter } from "../../bindings/index.ts";
import { API_KEY, FakeGemini } from "./fake-gemini.ts";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";
import { signedInClient, signUp } from "./signed-in.ts";

const CHROMIUM = process.env.ALIAS_CHROMIUM ?? "/usr/bin/chromium";
const skip = existsSync(CHROMIUM) ? false : `Chromium is not installed at ${CHROMIUM}`;
const TEST_MS = 60_000;

const MARKDOWN_REPLY = "Here is **bold advice** and a list:\n\n- first step\n- second step\n";
const HOSTILE_SCRIPT = "<script>window.__pwned = 1; alert('script ran')</script>";
const HOSTILE_IMAGE = `Look <img src=x onerror="window.__pwned = 2; alert('onerror ran')"> here`;
const HOSTILE_TITLE = `"><script>window.__pwned = 3</script> Trip`;

describe("the share page in Chromium", () => {
  let gemini: FakeGemini;
  let server: RunningServer;
  let browser: Browser;
  let client: TRPCClient<AppRouter>;

  before(async () => {
    if (skip) return;
    gemini = new FakeGemini({ reply: (said) => (said.includes("advice") ? [MARKDOWN_REPLY] : ["Noted."]) });
    server = await startServer({ ALIAS_GEMINI_BASE_URL: await gemini.start() });
    client = signedInClient(server.url, await signUp(server.url));
    await withTimeout(client.apiKeys.set.mutate({ provider: "gemini", apiKey: API_KEY, validate: false }));
    // Running as root (CI containers) needs Chromium's sandbox off.
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    await gemini?.stop();
  });

  /** Sends `content` and waits until the reply is complete. */
  async function say(sessionId: string, content: string) {
    const sent = await withTimeout(client.chat.send.mutate({ sessionId, content, clientMessageId: randomUUID() }));
    for (let tries = 0; tries < 100; tries += 1) {
      const { messages } = await withTimeout(client.chat.messages.list.query({ sessionId }));
      const reply = messages.find((message) => message.id === sent.replyMessageId);
      if (reply && reply.status !== "streaming") return;
      await sleep(100);
    }
    assert.fail("the reply did not finish");
  }

  /** A phone-sized page that records dialogs (an `alert` would be one). */
  async function phonePage(): Promise<{ page: Page; dialogs: string[] }> {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true });
    const dialogs: string[] = [];
    page.on("dialog", (dialog) => {
      dialogs.push(dialog.message());
      void dialog.dismiss();
    });
    return { page, dialogs };
  }

  test("renders the snapshot, runs nothing hostile, and revocation takes effect", { timeout: TEST_MS, skip }, async () => {
    const session = await withTimeout(client.chat.sessions.create.mutate({}));
    await say(session.id, "Any advice for the trip?");
    await say(session.id, HOSTILE_SCRIPT);
    await say(session.id, HOSTILE_IMAGE);
    await withTimeout(client.chat.sessions.update.mutate({ id: session.id, title: HOSTILE_TITLE }));
    const share = await withTimeout(client.chat.shares.create.mutate({ sessionId: session.id }));
    assert.match(share.url, /\/s\/[A-Za-z0-9_-]{43}$/);
    await say(session.id, "Said after sharing");

    const { page, dialogs } = await phonePage();
    const response = await page.goto(share.url);
    assert.equal(response?.status(), 200);

    // The snapshot, with its Markdown rendered; nothing said after sharing.
    await page.getByText("Any advice for the trip?").waitFor();
    assert.equal(await page.locator("strong", { hasText: "bold advice" }).count(), 1);
    assert.deepEqual(await page.locator("li").allTextContents(), ["first step", "second step"]);
    assert.equal(await page.getByText("Said after sharing").count(), 0);

    // Hostile markup is visible as text and never ran.
    await page.getByText(HOSTILE_SCRIPT).waitFor();
    await page.getByText(`<img src=x onerror="window.__pwned = 2; alert('onerror ran')">`).waitFor();
    assert.equal(await page.title(), HOSTILE_TITLE);
    assert.equal(await page.locator("h1").textContent(), HOSTILE_TITLE);
    await sleep(300);
    assert.equal(await page.evaluate(() => (window as { __pwned?: unknown }).__pwned), undefined);
    assert.deepEqual(dialogs, []);
    assert.equal(await page.locator("script, img, iframe").count(), 0);

    // Readable on a phone: styled (the inline stylesheet passed the CSP), no sideways scrolling.
    const layout = await page.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth,
      width: window.innerWidth,
      maxWidth: getComputedStyle(document.body).maxWidth,
    }));
    assert.ok(layout.scrollWidth <= layout.width, JSON.stringify(layout));
    assert.notEqual(layout.maxWidth, "none", "the stylesheet applied");

    // Revoked: the same page answers 410 on reload.
    const revoked = await withTimeout(client.chat.shares.revoke.mutate({ id: share.id }));
    assert.equal(revoked.status, "revoked");
    const reloaded = await page.reload();
    assert.equal(reloaded?.status(), 410);
    await page.getByText("This link no longer works").waitFor();
    assert.equal(await page.getByText("Any advice for the trip?").count(), 0);
    await page.close();
  });
});
