// End-to-end: the real @trpc/client against the real alias-server binary.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  createTRPCClient,
  httpBatchLink,
  httpLink,
  httpSubscriptionLink,
  TRPCClientError,
  type TRPCLink,
} from "@trpc/client";
import { EventSource } from "eventsource";
import type { AppRouter, StreamCheckInput, StreamTick } from "../../bindings/index.ts";
import { createClient } from "../example-client.ts";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";

let server: RunningServer;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server?.stop();
});

const clientWith = (link: TRPCLink<AppRouter>) => createTRPCClient<AppRouter>({ links: [link] });

type Tick = { id: string; data: StreamTick };
type Outcome = { ticks: Tick[]; completed: boolean; stopped: boolean };

/** Runs `system.streamCheck` through `httpSubscriptionLink` until it completes or fails. */
function streamCheck(input: StreamCheckInput, ms = 5_000): Promise<Outcome> {
  const client = clientWith(httpSubscriptionLink({ url: server.url, EventSource }));
  const outcome: Outcome = { ticks: [], completed: false, stopped: false };
  let unsubscribe = () => {};
  const done = new Promise<Outcome>((resolve, reject) => {
    const subscription = client.system.streamCheck.subscribe(input, {
      onData: (tick) => void outcome.ticks.push(tick),
      onError: reject,
      onComplete: () => {
        outcome.completed = true;
        resolve(outcome);
      },
      onStopped: () => void (outcome.stopped = true),
    });
    unsubscribe = () => subscription.unsubscribe();
  });
  return withTimeout(done, ms, "streamCheck").finally(unsubscribe);
}

describe("system.health", () => {
  test("through httpLink", async () => {
    const client = clientWith(httpLink({ url: server.url }));
    const health = await withTimeout(client.system.health.query());
    assert.equal(health.status, "ok");
    assert.equal(typeof health.version, "string");
    assert.ok(["sqlite", "postgres"].includes(health.database));
  });

  test("two calls batched into one request through httpBatchLink", async () => {
    const urls: string[] = [];
    const client = clientWith(
      httpBatchLink({
        url: server.url,
        fetch: (input, init) => {
          urls.push(String(input));
          return fetch(input, init);
        },
      }),
    );
    const [first, second] = await withTimeout(
      Promise.all([client.system.health.query(), client.system.health.query()]),
    );
    assert.equal(first.status, "ok");
    assert.deepEqual(second, first);
    assert.equal(urls.length, 1, `expected one request, got ${urls.join(", ")}`);
    assert.match(urls[0] ?? "", /\/trpc\/system\.health,system\.health\?batch=1/);
  });

  test("through the example client", async () => {
    const health = await withTimeout(createClient(server.url).system.health.query());
    assert.equal(health.status, "ok");
  });
});

test("an unknown path is a NOT_FOUND TRPCClientError", async () => {
  const client = clientWith(httpLink({ url: server.url }));
  const untyped = client as unknown as { system: { nope: { query(): Promise<unknown> } } };
  const error = await withTimeout(untyped.system.nope.query()).then(
    () => assert.fail("expected an error"),
    (error: unknown) => error,
  );
  assert.ok(error instanceof TRPCClientError, `not a TRPCClientError: ${error}`);
  const { data } = error as TRPCClientError<AppRouter>;
  assert.equal(data?.code, "NOT_FOUND");
  assert.equal(data?.httpStatus, 404);
  assert.equal(data?.path, "system.nope");
});

describe("system.streamCheck over SSE", () => {
  test("delivers tracked ticks 1..3, then completes", async () => {
    const { ticks, completed, stopped } = await streamCheck({});
    assert.deepEqual(
      ticks.map(({ id, data }) => ({ id, seq: data.seq })),
      [
        { id: "1", seq: 1 },
        { id: "2", seq: 2 },
        { id: "3", seq: 3 },
      ],
    );
    for (const { data } of ticks) assert.ok(!Number.isNaN(Date.parse(data.at)), data.at);
    assert.ok(completed);
    assert.ok(stopped);
  });

  test("count out of range fails with BAD_REQUEST", async () => {
    const error = await streamCheck({ count: 99 }).then(
      () => assert.fail("expected an error"),
      (error: unknown) => error,
    );
    assert.ok(error instanceof TRPCClientError, `not a TRPCClientError: ${error}`);
    const { data } = error as TRPCClientError<AppRouter>;
    assert.equal(data?.code, "BAD_REQUEST");
    assert.equal(data?.httpStatus, 400);
  });

  test("resumes after lastEventId", async () => {
    const { ticks, completed } = await streamCheck({ count: 5, lastEventId: "3" });
    assert.deepEqual(
      ticks.map(({ id, data }) => [id, data.seq]),
      [
        ["4", 4],
        ["5", 5],
      ],
    );
    assert.ok(completed);
  });

  test("can be read with for await through the example client", async () => {
    const signal = AbortSignal.timeout(5_000);
    const seqs: number[] = [];
    for await (const tick of createClient(server.url).system.streamCheck.subscribe({ count: 2 }, { signal })) {
      seqs.push(tick.data.seq);
    }
    assert.deepEqual(seqs, [1, 2]);
  });
});
