// `chat.send` (a mutation: the message travels in the POST body) and `chat.follow` (the reply's
// events over `httpSubscriptionLink`) with the real links; the legacy GET `chat.send`
// subscription still answers clients built before the split.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { createTRPCUntypedClient, TRPCClientError, type TRPCClient } from "@trpc/client";
import type { AppRouter, ChatEvent, FollowInput } from "../../bindings/index.ts";
import { FakeGemini } from "./fake-gemini.ts";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";
import { signedInClient, signUp, subscriptionLink } from "./signed-in.ts";

const API_KEY = "AIza-follow-key";
const TEST_MS = 30_000;

/** The fake repeats what the user said, in pieces of 8,000 characters. */
function echo(said: string): string[] {
  const pieces: string[] = [];
  for (let start = 0; start < said.length; start += 8_000) pieces.push(said.slice(start, start + 8_000));
  return pieces.length > 0 ? pieces : [""];
}

let gemini: FakeGemini;
let server: RunningServer;
let token: string;
let client: TRPCClient<AppRouter>;
let sessionId: string;

before(async () => {
  gemini = new FakeGemini({ apiKey: API_KEY, reply: echo, title: "Echo" });
  server = await startServer({
    ALIAS_GEMINI_BASE_URL: await gemini.start(),
    ALIAS_AUTH_IP_LIMIT_PER_MINUTE: "1000",
  });
  token = await signUp(server.url);
  client = signedInClient(server.url, token);
  await withTimeout(
    client.apiKeys.set.mutate({ provider: "gemini", apiKey: API_KEY, validate: false }),
  );
  sessionId = (await withTimeout(client.chat.sessions.create.mutate({}))).id;
});

after(async () => {
  await server?.stop();
  await gemini?.stop();
});

type Tracked = { id: string; data: ChatEvent };

/** Follows a reply until its stream ends; rejects on an error. */
function follow(input: FollowInput): Promise<Tracked[]> {
  const events: Tracked[] = [];
  let unsubscribe = () => {};
  const ended = new Promise<Tracked[]>((resolve, reject) => {
    const subscription = client.chat.follow.subscribe(input, {
      onData: (event) => void events.push(event),
      onError: reject,
      onComplete: () => resolve(events),
    });
    unsubscribe = () => subscription.unsubscribe();
  });
  return withTimeout(ended, 15_000, "chat.follow").finally(() => unsubscribe());
}

const deltas = (events: Tracked[]) =>
  events.flatMap((event) => (event.data.type === "delta" ? [event.data.text] : [])).join("");

describe("chat.send, then chat.follow", () => {
  test("a 64k-character message is sent and streamed back", { timeout: TEST_MS }, async () => {
    const line = "Quarterly memo: revenue ↑, costs ↓, headcount → (ünïcödé) ✓\n";
    const content = line.repeat(Math.ceil(64_000 / line.length)).slice(0, 63_999) + ".";
    assert.equal(content.length, 64_000);

    const sent = await withTimeout(
      client.chat.send.mutate({ sessionId, content, clientMessageId: randomUUID() }),
    );
    assert.equal(sent.userMessage.content, content);
    assert.equal(sent.userMessage.role, "user");

    const events = await follow({ messageId: sent.replyMessageId });
    assert.deepEqual(
      events.map((event) => Number(event.id)),
      events.map((_, index) => index + 1),
    );
    const first = events[0]?.data;
    assert.ok(first?.type === "userMessage");
    assert.equal(first.message.content, content);
    assert.equal(first.replyMessageId, sent.replyMessageId);
    assert.equal(deltas(events), content, "streamed back whole");
    const done = events.at(-1)?.data;
    assert.ok(done?.type === "done");
    assert.equal(done.message.id, sent.replyMessageId);
    assert.equal(done.message.status, "complete");
    assert.equal(done.message.content, content);
  });

  test("resending answers alike; following again resumes after lastEventId", { timeout: TEST_MS }, async () => {
    const input = { sessionId, content: "one two three four five", clientMessageId: randomUUID() };
    const streamedBefore = gemini.streamCalls().length;
    const [sent, again] = await withTimeout(
      Promise.all([client.chat.send.mutate(input), client.chat.send.mutate(input)]),
    );
    assert.deepEqual(again, sent, "one message, one reply");

    const all = await follow({ messageId: sent.replyMessageId });
    const resumeAfter = all[1];
    assert.ok(resumeAfter, "at least two events");
    const rest = await follow({ messageId: sent.replyMessageId, lastEventId: resumeAfter.id });
    assert.deepEqual(rest, all.slice(2), "exactly the events after it");
    assert.deepEqual(await withTimeout(client.chat.send.mutate(input)), sent);
    assert.equal(gemini.streamCalls().length, streamedBefore + 1, "one provider call");
  });

  test("failures before the reply are the mutation's typed errors", { timeout: TEST_MS }, async () => {
    const refused = await client.chat.send
      .mutate({ sessionId, content: "hi", clientMessageId: randomUUID(), provider: "openai" })
      .then(
        () => assert.fail("sent without a key"),
        (error: unknown) => error,
      );
    assert.ok(refused instanceof TRPCClientError);
    assert.equal(refused.data?.code, "PRECONDITION_FAILED");
    assert.equal(refused.data?.reason, "api_key_missing");

    const missing = await follow({ messageId: randomUUID() }).then(
      () => assert.fail("followed a reply that does not exist"),
      (error: unknown) => error,
    );
    assert.ok(missing instanceof TRPCClientError);
    assert.equal(missing.data?.code, "NOT_FOUND");
  });

  test("GET chat.send still streams the reply for clients built before chat.follow", { timeout: TEST_MS }, async () => {
    // Untyped: the bindings declare only the mutation.
    const legacy = createTRPCUntypedClient<AppRouter>({
      links: [subscriptionLink(server.url, token)],
    });
    const input = { sessionId, content: "legacy hello", clientMessageId: randomUUID() };
    const events = await withTimeout(
      new Promise<Tracked[]>((resolve, reject) => {
        const seen: Tracked[] = [];
        const subscription = legacy.subscription("chat.send", input, {
          onData: (event) => void seen.push(event as Tracked),
          onError: (error) => {
            subscription.unsubscribe();
            reject(error);
          },
          onComplete: () => resolve(seen),
        });
      }),
      15_000,
      "GET chat.send",
    );
    assert.equal(events[0]?.data.type, "userMessage");
    assert.equal(deltas(events), "legacy hello");
    const done = events.at(-1)?.data;
    assert.ok(done?.type === "done");
    const sent = await withTimeout(client.chat.send.mutate(input));
    assert.equal(sent.replyMessageId, done.message.id, "the same reply");
  });
});
