// End-to-end: a chat reply streamed by the real `httpSubscriptionLink` (through
// createAliasClient) from the real server, with Gemini played by a local HTTP server that speaks
// its streaming wire format (`streamGenerateContent?alt=sse`) and `generateContent` for the title.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { TRPCClientError } from "@trpc/client";
import type { inferRouterOutputs } from "@trpc/server";
import { EventSource } from "eventsource";
import type { AppRouter, ChatEvent, FollowInput, SendInput } from "../../bindings/index.ts";
import { createAliasClient, type AliasClient, type Tokens } from "../client.ts";
import { API_KEY, FakeGemini, REPLY, TITLE } from "./fake-gemini.ts";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";

/** Password hashing is slow in a debug build. */
const SIGN_IN_MS = 15_000;
const TEST_MS = 30_000;

let gemini: FakeGemini;
let server: RunningServer;

before(async () => {
  gemini = new FakeGemini();
  const geminiUrl = await gemini.start();
  server = await startServer({
    ALIAS_GEMINI_BASE_URL: geminiUrl,
    ALIAS_AUTH_IP_LIMIT_PER_MINUTE: "1000",
  });
});

after(async () => {
  await server?.stop();
  await gemini?.stop();
});

/** A client with an in-memory token store. */
function signedOutClient() {
  let stored: Tokens | null = null;
  const client: AliasClient = createAliasClient({
    url: server.url,
    getTokens: () => stored,
    setTokens: (tokens) => void (stored = tokens),
    EventSource,
  });
  return { client, store: (tokens: Tokens) => void (stored = tokens) };
}

/** What onData receives: `{ id, data }` with `data` a `ChatEvent`. */
type Tracked =
  inferRouterOutputs<AppRouter>["chat"]["follow"] extends AsyncIterable<infer T> ? T : never;
// The same tags as the bindings' `ChatEvent` (a compile-time check).
type SameTags<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const sameTags: SameTags<Tracked["data"]["type"], ChatEvent["type"]> = true;
void sameTags;
type Outcome = {
  events: Tracked[];
  /** onComplete ran (the server ended the stream). */
  completed: boolean;
  error: TRPCClientError<AppRouter> | null;
};

function asClientError(error: unknown): TRPCClientError<AppRouter> {
  assert.ok(error instanceof TRPCClientError, `not a TRPCClientError: ${error}`);
  return error as TRPCClientError<AppRouter>;
}

/** Sends with the `chat.send` mutation, then follows the reply with `chat.follow`. */
async function send(client: AliasClient, input: SendInput, ms = 15_000): Promise<Outcome> {
  try {
    const sent = await withTimeout(client.chat.send.mutate(input), ms, "chat.send");
    return await follow(client, { messageId: sent.replyMessageId }, ms);
  } catch (error) {
    return { events: [], completed: false, error: asClientError(error) };
  }
}

/** Runs `chat.follow` until the stream completes or fails; bounded by `ms`. */
function follow(client: AliasClient, input: FollowInput, ms = 15_000): Promise<Outcome> {
  const outcome: Outcome = { events: [], completed: false, error: null };
  let unsubscribe = () => {};
  const ended = new Promise<Outcome>((resolve) => {
    const subscription = client.chat.follow.subscribe(input, {
      onData: (event) => void outcome.events.push(event),
      onError: (error) => {
        outcome.error = asClientError(error);
        resolve(outcome);
      },
      onComplete: () => {
        outcome.completed = true;
        resolve(outcome);
      },
    });
    unsubscribe = () => subscription.unsubscribe();
  });
  return withTimeout(ended, ms, "chat.follow").finally(() => unsubscribe());
}

/** The event ids are the numbers 1, 2, … in order, with no gaps. */
function assertIncreasingIds(events: Tracked[], first: number) {
  assert.deepEqual(
    events.map((event) => Number(event.id)),
    events.map((_, index) => first + index),
    `ids: ${events.map((event) => event.id).join(", ")}`,
  );
}

function deltaTexts(events: Tracked[]): string[] {
  return events.flatMap((event) => (event.data.type === "delta" ? [event.data.text] : []));
}

describe("chat.send, then chat.follow over httpSubscriptionLink", () => {
  let client: AliasClient;
  let sessionId: string;
  /** The first test's reply and events, for resuming. */
  let firstReply: string | undefined;
  let firstEvents: Tracked[] = [];

  before(async () => {
    const h = signedOutClient();
    client = h.client;
    const session = await withTimeout(
      client.auth.register.mutate({
        email: `chat-${randomUUID()}@example.com`,
        password: "correct horse battery",
        name: "Chat Tester",
      }),
      SIGN_IN_MS,
      "auth.register",
    );
    h.store(session);
    const key = await withTimeout(
      client.apiKeys.set.mutate({ provider: "gemini", apiKey: API_KEY, validate: false }),
    );
    assert.equal(key.provider, "gemini");
    const created = await withTimeout(client.chat.sessions.create.mutate({}));
    sessionId = created.id;
  });

  test("streams a reply: userMessage, deltas, title, done", { timeout: TEST_MS }, async () => {
    const input: SendInput = { sessionId, content: "Say hello", clientMessageId: randomUUID() };
    const { events, completed, error } = await send(client, input);
    assert.equal(error, null, `unexpected error: ${error?.message}`);
    assert.ok(completed, "the stream completed");
    firstEvents = events;

    assertIncreasingIds(events, 1);
    const types = events.map((event) => event.data.type);
    assert.deepEqual(types, [
      "userMessage",
      ...types.slice(1, -2).map(() => "delta"),
      "title",
      "done",
    ]);
    assert.ok(types.length >= 4, "at least one delta");

    const first = events[0]?.data;
    assert.equal(first?.type, "userMessage");
    if (first?.type !== "userMessage") return;
    firstReply = first.replyMessageId ?? undefined;
    assert.equal(first.message.role, "user");
    assert.equal(first.message.content, "Say hello");
    assert.equal(first.message.sessionId, sessionId);
    assert.ok(first.replyMessageId, "replyMessageId is set");

    assert.equal(deltaTexts(events).join(""), REPLY);

    const title = events.at(-2)?.data;
    assert.deepEqual(title, { type: "title", title: TITLE });

    const done = events.at(-1)?.data;
    assert.equal(done?.type, "done");
    if (done?.type !== "done") return;
    assert.equal(done.message.id, first.replyMessageId);
    assert.equal(done.message.role, "assistant");
    assert.equal(done.message.status, "complete");
    assert.equal(done.message.content, REPLY);
    assert.equal(done.message.provider, "gemini");
    assert.deepEqual(done.message.usage, { inputTokens: 5, outputTokens: 3 });

    // The provider saw the key, the prompt and the same model for both calls.
    const streamed = gemini.streamCalls();
    assert.equal(streamed.length, 1);
    assert.equal(streamed[0]?.apiKey, API_KEY);
    assert.match(JSON.stringify(streamed[0]?.body), /Say hello/);
    assert.equal(done.message.model, streamed[0]?.model);
    const titleCalls = gemini.calls.filter((call) => call.kind === "complete");
    assert.equal(titleCalls.length, 1, "one title call");

    const page = await withTimeout(client.chat.messages.list.query({ sessionId }));
    assert.deepEqual(
      page.messages.map((message) => [message.role, message.content, message.status]),
      [
        ["user", "Say hello", "complete"],
        ["assistant", REPLY, "complete"],
      ],
    );
    assert.equal(page.messages[1]?.id, first.replyMessageId);
    const session = await withTimeout(client.chat.sessions.get.query({ id: sessionId }));
    assert.equal(session.title, TITLE);
  });

  test("resumes after lastEventId, calling the provider once", { timeout: TEST_MS }, async () => {
    assert.ok(firstReply, "the first test ran");
    const firstDelta = firstEvents.find((event) => event.data.type === "delta");
    assert.ok(firstDelta);

    const { events, completed, error } = await follow(client, {
      messageId: firstReply,
      lastEventId: firstDelta.id,
    });
    assert.equal(error, null, `unexpected error: ${error?.message}`);
    assert.ok(completed, "the stream completed");

    const later = firstEvents.filter((event) => Number(event.id) > Number(firstDelta.id));
    assert.deepEqual(events, later, "exactly the events after the first delta");
    assertIncreasingIds(events, Number(firstDelta.id) + 1);
    assert.ok(!events.some((event) => event.data.type === "userMessage"));
    assert.deepEqual(events.at(-1), firstEvents.at(-1), "the same done");
    assert.equal(gemini.streamCalls().length, 1, "the provider streamed exactly once in total");
  });

  test("a provider without a key fails: api_key_missing", { timeout: TEST_MS }, async () => {
    const streamedBefore = gemini.streamCalls().length;
    const { events, completed, error } = await send(client, {
      sessionId,
      content: "Say hello again",
      clientMessageId: randomUUID(),
      provider: "openai",
    });
    assert.ok(error, "the mutation failed");
    assert.equal(completed, false);
    assert.deepEqual(events, []);
    assert.equal(error.data?.code, "PRECONDITION_FAILED");
    assert.equal(error.data?.reason, "api_key_missing");
    assert.equal(gemini.streamCalls().length, streamedBefore);
  });
});
