// A reply failing after the message was saved, as the app sees it through the real
// `httpSubscriptionLink`: the stream ends once, normally, with `done` whose message says why
// (`message.error`); no error callback, no reconnect loop. The reason is saved with the reply.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createTRPCClient, httpBatchLink, splitLink, type TRPCClient } from "@trpc/client";
import type { AppRouter, ChatEvent, MessageErrorReason } from "../../bindings/index.ts";
import { FakeGemini, type Failure } from "./fake-gemini.ts";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";
import { signUp, subscriptionLink } from "./signed-in.ts";

const API_KEY = "AIza-failures-key";
const TEST_MS = 30_000;

/** What the fake answers instead of a reply, by what the user said. */
function failure(said: string): Failure | undefined {
  if (said.includes("server error")) {
    return { status: 500, body: { error: { code: 500, message: "Internal error", status: "INTERNAL" } } };
  }
  if (said.includes("rate limit")) {
    const body = { error: { code: 429, message: "Resource exhausted", status: "RESOURCE_EXHAUSTED" } };
    return { status: 429, body, retryAfter: "7" };
  }
  return undefined;
}

let gemini: FakeGemini;
let server: RunningServer;
let client: TRPCClient<AppRouter>;
/** `chat.follow` requests the subscription link made (each reconnect is one more). */
let follows = 0;

before(async () => {
  gemini = new FakeGemini({ apiKey: API_KEY, reply: () => ["Hi"], title: "Failures", failure });
  server = await startServer({
    ALIAS_GEMINI_BASE_URL: await gemini.start(),
    ALIAS_AUTH_IP_LIMIT_PER_MINUTE: "1000",
  });
  const token = await signUp(server.url);
  const counting: typeof fetch = (input, init) => {
    if (String(input).includes("chat.follow")) follows += 1;
    return fetch(input, init);
  };
  client = createTRPCClient<AppRouter>({
    links: [
      splitLink({
        condition: (op) => op.type === "subscription",
        true: subscriptionLink(server.url, token, counting),
        false: httpBatchLink({ url: server.url, headers: { authorization: `Bearer ${token}` } }),
      }),
    ],
  });
  await withTimeout(
    client.apiKeys.set.mutate({ provider: "gemini", apiKey: API_KEY, validate: false }),
  );
});

after(async () => {
  await server?.stop();
  await gemini?.stop();
});

type Tracked = { id: string; data: ChatEvent };

type Seen = { events: Tracked[]; errors: unknown[]; states: string[] };

/** Follows a reply as an app does, recording every callback, until it completes. */
function follow(messageId: string): Promise<Seen> {
  const seen: Seen = { events: [], errors: [], states: [] };
  let unsubscribe = () => {};
  const ended = new Promise<Seen>((resolve) => {
    const subscription = client.chat.follow.subscribe(
      { messageId },
      {
        onData: (event) => void seen.events.push(event),
        onError: (error) => void seen.errors.push(error),
        onConnectionStateChange: (state) => void seen.states.push(state.state),
        onComplete: () => resolve(seen),
      },
    );
    unsubscribe = () => subscription.unsubscribe();
  });
  return withTimeout(ended, 15_000, "chat.follow").finally(() => unsubscribe());
}

describe("a reply failing upstream", () => {
  const cases: [string, MessageErrorReason, number | null][] = [
    ["a server error please", "provider_error", null],
    ["rate limit me", "provider_rate_limited", 7],
  ];
  for (const [said, reason, retryAfterSeconds] of cases) {
    test(`reaches the app once, as done with ${reason}`, { timeout: TEST_MS }, async () => {
      const sessionId = (await withTimeout(client.chat.sessions.create.mutate({}))).id;
      const sent = await withTimeout(
        client.chat.send.mutate({ sessionId, content: said, clientMessageId: randomUUID() }),
      );
      const before = follows;
      const seen = await follow(sent.replyMessageId);
      assert.deepEqual(seen.errors, [], "no error callback");
      assert.ok(seen.states.filter((state) => state === "connecting").length <= 1, `${seen.states}`);
      assert.deepEqual(
        seen.events.map((event) => event.data.type),
        ["userMessage", "done"],
      );
      const done = seen.events.at(-1)?.data;
      assert.ok(done?.type === "done");
      assert.equal(done.message.status, "error");
      assert.equal(done.message.error?.reason, reason);
      assert.equal(done.message.error?.retryAfterSeconds, retryAfterSeconds);
      assert.match(done.message.error?.message ?? "", /Gemini/);
      // Given time to reconnect, it does not.
      await sleep(500);
      assert.equal(follows - before, 1, "one request, no reconnect");

      const page = await withTimeout(client.chat.messages.list.query({ sessionId }));
      const saved = page.messages.find((message) => message.id === sent.replyMessageId);
      assert.deepEqual(saved?.error, done.message.error, "saved with the reply");
    });
  }
});
