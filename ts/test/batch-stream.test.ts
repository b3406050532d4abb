// `httpBatchStreamLink`, the link tRPC's docs put first, against the real server: one request
// per batch, each call's result delivered as soon as it is ready, errors per call.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { TRPCClientError, type TRPCClient } from "@trpc/client";
import type { AppRouter } from "../../bindings/index.ts";
import { FakeGemini } from "./fake-gemini.ts";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";
import { signedInClient, signUp } from "./signed-in.ts";

const API_KEY = "AIza-batch-stream-key";

let gemini: FakeGemini;
let server: RunningServer;
let client: TRPCClient<AppRouter>;
/** The requests the client sent: URL and `trpc-accept`. */
const requests: { url: string; accept: string | null }[] = [];

before(async () => {
  gemini = new FakeGemini({ apiKey: API_KEY, reply: () => ["Hi"], title: "Title" });
  server = await startServer({
    ALIAS_GEMINI_BASE_URL: await gemini.start(),
    ALIAS_AUTH_IP_LIMIT_PER_MINUTE: "1000",
  });
  const token = await signUp(server.url);
  const recording: typeof fetch = (input, init) => {
    const accept = new Headers(init?.headers).get("trpc-accept");
    requests.push({ url: String(input), accept });
    return fetch(input, init);
  };
  client = signedInClient(server.url, token, "batchStream", recording);
  await withTimeout(
    client.apiKeys.set.mutate({ provider: "gemini", apiKey: API_KEY, validate: false }),
  );
});

after(async () => {
  await server?.stop();
  await gemini?.stop();
});

/** Settles to the value or the client error, noting the order in which calls settled. */
function tracked<T>(name: string, order: string[], call: Promise<T>): Promise<T | TRPCClientError<AppRouter>> {
  return call.then(
    (value) => {
      order.push(name);
      return value;
    },
    (error: unknown) => {
      order.push(name);
      assert.ok(error instanceof TRPCClientError, `${name}: not a TRPCClientError: ${error}`);
      return error as TRPCClientError<AppRouter>;
    },
  );
}

describe("httpBatchStreamLink", () => {
  test("fast, slow and failing calls of one batch arrive as each completes", async () => {
    gemini.holdKeyChecks(); // apiKeys.validate waits on the provider until released
    const order: string[] = [];
    const sentBefore = requests.length;
    const slow = tracked("slow", order, client.apiKeys.validate.mutate({ provider: "gemini" }));
    const fast = tracked("fast", order, client.chat.sessions.create.mutate({ title: "Streamed" }));
    const failing = tracked(
      "failing",
      order,
      client.chat.sessions.delete.mutate({ id: randomUUID() }),
    );

    const [created, refused] = await withTimeout(Promise.all([fast, failing]));
    assert.deepEqual([...order].sort(), ["failing", "fast"], "the slow call is still running");
    assert.ok(!(created instanceof TRPCClientError), `create failed: ${created}`);
    assert.equal(created.title, "Streamed");
    assert.ok(refused instanceof TRPCClientError);
    assert.equal(refused.data?.code, "NOT_FOUND");
    assert.equal(refused.data?.httpStatus, 404);
    assert.equal(refused.data?.path, "chat.sessions.delete");

    gemini.openKeyChecks();
    const validation = await withTimeout(slow);
    assert.ok(!(validation instanceof TRPCClientError), `validate failed: ${validation}`);
    assert.equal(validation.valid, true);
    assert.deepEqual(order.at(-1), "slow");

    const batch = requests.slice(sentBefore);
    assert.equal(batch.length, 1, `one request for the three calls: ${JSON.stringify(batch)}`);
    assert.match(batch[0]?.url ?? "", /apiKeys\.validate,chat\.sessions\.create,chat\.sessions\.delete\?batch=1/);
    assert.equal(batch[0]?.accept, "application/jsonl");
  });

  test("batched queries, each with its own outcome", async () => {
    const [me, missing, sessions] = await withTimeout(
      Promise.allSettled([
        client.users.me.query(),
        client.chat.sessions.get.query({ id: randomUUID() }),
        client.chat.sessions.list.query({ limit: 5 }),
      ]),
    );
    assert.ok(me.status === "fulfilled", `users.me: ${JSON.stringify(me)}`);
    assert.equal(me.value.name, "Wire Tester");
    assert.ok(missing.status === "rejected");
    assert.ok(missing.reason instanceof TRPCClientError);
    assert.equal(missing.reason.data?.code, "NOT_FOUND");
    assert.ok(sessions.status === "fulfilled", `sessions.list: ${JSON.stringify(sessions)}`);
    assert.ok(sessions.value.sessions.some((session) => session.title === "Streamed"));
  });

  test("a refused batch fails every call with the same typed error", async () => {
    const input = { email: "a@example.com", password: "x".repeat(2 * 1024 * 1024) };
    const results = await withTimeout(
      Promise.allSettled([client.auth.login.mutate(input), client.chat.sessions.create.mutate({})]),
    );
    for (const result of results) {
      assert.ok(result.status === "rejected");
      assert.ok(result.reason instanceof TRPCClientError);
      assert.equal(result.reason.data?.code, "PAYLOAD_TOO_LARGE");
    }
  });
});
