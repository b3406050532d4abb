// Subscriptions on React Native/Hermes: this process has no MessageEvent and no EventSource, and
// its global fetch does not stream (see hermes-env.ts). Configured as the README's Expo section
// says (`EventSource` from `eventsource`, `fetch` from `expo/fetch`, here Node's streaming fetch),
// createAliasClient streams from the real server; configured wrongly, it fails at once with an
// error naming the fix instead of reconnecting forever.
import {
  builtInFetchCalls,
  nativeMessageEvent,
  nonStreamingFetch,
  streamingFetch as expoFetch,
} from "./hermes-env.ts";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { TRPCClientError } from "@trpc/client";
import { EventSource } from "eventsource";
import type { StreamTick } from "../../bindings/index.ts";
import { createAliasClient, isAliasError, type AliasClient, type AliasClientOptions, type Tokens } from "../client.ts";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";

let server: RunningServer;

before(async () => {
  server = await startServer({ ALIAS_AUTH_IP_LIMIT_PER_MINUTE: "1000" });
});

after(async () => {
  await server?.stop();
});

type Tick = { id: string; data: StreamTick };

/** The client as the README's Expo section sets it up, with an in-memory token store. */
function expoClient(overrides: Partial<AliasClientOptions> = {}) {
  let stored: Tokens | null = null;
  const client = createAliasClient({
    url: server.url,
    getTokens: () => stored,
    setTokens: (tokens) => void (stored = tokens),
    EventSource,
    fetch: expoFetch,
    ...overrides,
  });
  return { client, store: (tokens: Tokens) => void (stored = tokens) };
}

/** Runs `system.streamCheck` until it completes or fails. */
function streamCheck(client: AliasClient, count = 3) {
  const ticks: Tick[] = [];
  let unsubscribe = () => {};
  const ended = new Promise<{ ticks: Tick[]; error: unknown }>((resolve) => {
    const subscription = client.system.streamCheck.subscribe(
      { count },
      {
        onData: (tick) => void ticks.push(tick),
        onError: (error) => resolve({ ticks, error }),
        onComplete: () => resolve({ ticks, error: null }),
      },
    );
    unsubscribe = () => subscription.unsubscribe();
  });
  return withTimeout(ended, 10_000, "streamCheck").finally(() => unsubscribe());
}

// One after another: the tests share the process's globals and the record of built-in fetches.
describe("subscriptions on a Hermes-like runtime", { concurrency: 1 }, () => {
  describe("the runtime", () => {
    test("has no MessageEvent, and the bare eventsource ponyfill fails on it", async () => {
      assert.equal(typeof globalThis.MessageEvent, "undefined");
      assert.equal(typeof globalThis.EventSource, "undefined");
      const input = encodeURIComponent(JSON.stringify({ count: 1 }));
      const source = new EventSource(`${server.url}/system.streamCheck?input=${input}`, {
        fetch: expoFetch,
      });
      const failure = await withTimeout(
        new Promise<string>((resolve) => {
          source.addEventListener("error", (event) => resolve(String(event.message)));
        }),
      ).finally(() => source.close());
      assert.match(failure, /MessageEvent is not defined/);
    });
  });

  describe("createAliasClient configured as the README says", () => {
    test("streams a subscription: every tick, then completes", async () => {
      const { client } = expoClient();
      const { ticks, error } = await streamCheck(client, 3);
      assert.equal(error, null, `unexpected error: ${error}`);
      assert.deepEqual(
        ticks.map(({ id, data }) => [id, data.seq]),
        [
          ["1", 1],
          ["2", 2],
          ["3", 3],
        ],
      );
      // The client installed the missing MessageEvent; React Native's fetch was never used.
      assert.equal(typeof globalThis.MessageEvent, "function");
      assert.deepEqual(builtInFetchCalls, []);
    });

    test("signs calls and subscriptions through the given fetch", { timeout: 30_000 }, async () => {
      const { client, store } = expoClient();
      const session = await withTimeout(
        client.auth.register.mutate({
          email: `hermes-${randomUUID()}@example.com`,
          password: "correct horse battery",
          name: "Hermes",
        }),
        15_000,
        "auth.register",
      );
      store(session);
      const me = await withTimeout(client.users.me.query());
      assert.equal(me.name, "Hermes");

      // A signed-in subscription: NOT_FOUND (not UNAUTHORIZED) shows the bearer header arrived.
      const error = await withTimeout(
        new Promise<unknown>((resolve) => {
          const subscription = client.chat.follow.subscribe(
            { messageId: randomUUID() },
            {
              onError: (error) => {
                subscription.unsubscribe();
                resolve(error);
              },
              onComplete: () => resolve(null),
            },
          );
        }),
      );
      assert.ok(isAliasError(error), `not a TRPCClientError: ${error}`);
      assert.equal(error.data?.code, "NOT_FOUND");
      assert.deepEqual(builtInFetchCalls, []);
    });
  });

  describe("createAliasClient configured wrongly on Hermes fails at once, naming the fix", () => {
    test("without `fetch`: React Native's built-in fetch cannot stream", async () => {
      const { client } = expoClient({ fetch: undefined });
      const { ticks, error } = await streamCheck(client);
      assert.ok(error instanceof TRPCClientError, `not a TRPCClientError: ${error}`);
      assert.match(error.message, /expo\/fetch/);
      assert.deepEqual(ticks, []);
      assert.deepEqual(builtInFetchCalls, [], "no request was made");
    });

    test("with a fetch whose response does not stream", async () => {
      const { client } = expoClient({ fetch: nonStreamingFetch });
      const { ticks, error } = await streamCheck(client, 1);
      assert.ok(error instanceof TRPCClientError, `not a TRPCClientError: ${error}`);
      assert.match(error.message, /without a streaming body.*expo\/fetch/);
      assert.deepEqual(ticks, []);
      assert.equal(builtInFetchCalls.length, 1, "it did not reconnect");
      builtInFetchCalls.length = 0;
    });

    test("without `EventSource`", async () => {
      const { client } = expoClient({ EventSource: undefined });
      const { error } = await streamCheck(client);
      assert.ok(error instanceof TRPCClientError, `not a TRPCClientError: ${error}`);
      assert.match(error.message, /no EventSource.*`eventsource` package/);
    });
  });

  test("a runtime that has MessageEvent keeps its own", async () => {
    globalThis.MessageEvent = nativeMessageEvent;
    const { client } = expoClient();
    const { ticks, error } = await streamCheck(client, 1);
    assert.equal(error, null, `unexpected error: ${error}`);
    assert.equal(ticks.length, 1);
    assert.equal(globalThis.MessageEvent, nativeMessageEvent);
  });
});
