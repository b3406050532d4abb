// createAliasClient's options against the real server: the app's own links (before the client's),
// the batch limits handed to httpBatchLink, and isAliasError's narrowing.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { loggerLink, TRPCClientError, type TRPCLink } from "@trpc/client";
import { tap } from "@trpc/server/observable";
import type { AppRouter } from "../../bindings/index.ts";
import {
  createAliasClient,
  DEFAULT_MAX_ITEMS,
  isAliasError,
  type AliasClientOptions,
  type Tokens,
} from "../client.ts";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";

let server: RunningServer;

before(async () => {
  server = await startServer({ ALIAS_AUTH_IP_LIMIT_PER_MINUTE: "1000" });
});

after(async () => {
  await server?.stop();
});

/** A client with an in-memory token store that records the URL of every request it sends. */
function recordingClient(options: Partial<AliasClientOptions> = {}) {
  let stored: Tokens | null = null;
  const urls: string[] = [];
  const client = createAliasClient({
    url: server.url,
    getTokens: () => stored,
    setTokens: (tokens) => void (stored = tokens),
    fetch: (url, init) => {
      urls.push(url);
      return fetch(url, init);
    },
    ...options,
  });
  /** The procedures of each request, e.g. `[["system.health", "system.health"], ["auth.refresh"]]`. */
  const requests = () =>
    urls.map((url) => decodeURIComponent(new URL(url).pathname.split("/").pop() ?? "").split(","));
  return { client, urls, requests, store: (tokens: Tokens) => void (stored = tokens) };
}

describe("the app's own links", () => {
  test("run first, once per call, and see its final result (after a refresh)", { timeout: 30_000 }, async () => {
    type Logged = { direction: "up" | "down"; path: string; context: object; ok?: boolean };
    const logged: Logged[] = [];
    const seen: string[] = [];
    const recordLink: TRPCLink<AppRouter> = () => ({ op, next }) => {
      seen.push(`${op.type} ${op.path}`);
      return next(op).pipe(tap({ next: () => seen.push(`result ${op.path}`) }));
    };
    const h = recordingClient({
      links: [
        loggerLink({
          logger: (entry) =>
            void logged.push({
              direction: entry.direction,
              path: entry.path,
              context: entry.context,
              ...(entry.direction === "down" ? { ok: !(entry.result instanceof Error) } : {}),
            }),
        }),
        recordLink,
      ],
    });
    const session = await withTimeout(
      h.client.auth.register.mutate({
        email: `links-${randomUUID()}@example.com`,
        password: "correct horse battery",
        name: "Links",
      }),
      15_000,
    );
    // An access token the server refuses (as after a signing-key rotation): the client refreshes.
    h.store({ accessToken: "not.a.token", refreshToken: session.refreshToken });

    const me = await withTimeout(h.client.users.me.query());
    assert.equal(me.name, "Links");
    // The transport sent users.me twice (invalid_token, then after the refresh)...
    assert.deepEqual(h.requests().slice(1), [["users.me"], ["auth.refresh"], ["users.me"]]);
    // ...the app's links saw one call and its one, successful, result.
    assert.deepEqual(seen, ["mutation auth.register", "result auth.register", "query users.me", "result users.me"]);
    const meLogs = logged.filter((entry) => entry.path === "users.me");
    assert.deepEqual(
      meLogs.map(({ direction, ok }) => ({ direction, ok })),
      [{ direction: "up", ok: undefined }, { direction: "down", ok: true }],
    );
    // The access token is added after them: nothing a logger prints holds it.
    for (const entry of logged) assert.doesNotMatch(JSON.stringify(entry.context), /eyJ|accessToken/i);
  });
});

describe("batch limits", () => {
  test(`by default at most ${DEFAULT_MAX_ITEMS} calls (the server's ALIAS_MAX_BATCH_SIZE) share a request`, async () => {
    const h = recordingClient();
    const calls = Array.from({ length: DEFAULT_MAX_ITEMS + 1 }, () => h.client.system.health.query());
    const results = await withTimeout(Promise.all(calls));
    assert.ok(results.every((health) => health.status === "ok"));
    assert.deepEqual(
      h.requests().map((paths) => paths.length),
      [DEFAULT_MAX_ITEMS, 1],
    );
  });

  test("maxItems", async () => {
    const h = recordingClient({ maxItems: 2 });
    await withTimeout(Promise.all(Array.from({ length: 5 }, () => h.client.system.health.query())));
    assert.deepEqual(
      h.requests().map((paths) => paths.length),
      [2, 2, 1],
    );
  });

  test("maxURLLength splits a batch of queries; a single query over it fails unsent", async () => {
    const maxURLLength = 400;
    const h = recordingClient({ maxURLLength });
    const ids = Array.from({ length: 6 }, () => randomUUID());
    const answers = await withTimeout(
      Promise.all(ids.map((id) => h.client.chat.sessions.get.query({ id }).catch((error: unknown) => error))),
    );
    // Signed out: every call was answered, by the server.
    for (const answer of answers) assert.ok(isAliasError(answer, "missing_token"), String(answer));
    assert.ok(h.urls.length > 1, "split into several requests");
    for (const url of h.urls) assert.ok(url.length <= maxURLLength, `${url.length} > ${maxURLLength}`);
    assert.equal(h.requests().flat().length, ids.length);

    const sent = h.urls.length;
    const tooLong = await h.client.chat.search.query({ query: "x".repeat(maxURLLength) }).catch((error: unknown) => error);
    assert.ok(isAliasError(tooLong), String(tooLong));
    assert.match(tooLong.message, /too big/i);
    assert.equal(tooLong.data, undefined, "not an answer from the server");
    assert.equal(h.urls.length, sent, "nothing was sent");
  });
});

describe("isAliasError", () => {
  test("narrows a server error to its reason and data", async () => {
    const { client } = recordingClient();
    const error = await client.users.me.query().catch((caught: unknown) => caught);
    assert.ok(isAliasError(error));
    assert.ok(isAliasError(error, "missing_token"));
    assert.equal(isAliasError(error, "token_expired"), false);
    if (isAliasError(error, "missing_token")) {
      // Typed: data is defined and reason is exactly "missing_token".
      const reason: "missing_token" = error.data.reason;
      assert.equal(reason, "missing_token");
      assert.equal(error.data.code, "UNAUTHORIZED");
      assert.equal(error.data.httpStatus, 401);
    }
  });

  test("field errors are typed on data", async () => {
    const { client } = recordingClient();
    const error = await client.auth.register
      .mutate({ email: "not-an-email", password: "short", name: "x" })
      .catch((caught: unknown) => caught);
    assert.ok(isAliasError(error));
    assert.equal(error.data?.code, "BAD_REQUEST");
    const fields: { [field: string]: string } | undefined = error.data?.fieldErrors;
    assert.ok(fields?.["email"], JSON.stringify(fields));
  });

  test("is false for anything else, true for a TRPCClientError from another copy of @trpc/client", () => {
    for (const value of [new Error("boom"), new TypeError("x"), "TRPCClientError", null, undefined, {}]) {
      assert.equal(isAliasError(value), false, String(value));
    }
    assert.ok(isAliasError(new TRPCClientError("local")));
    const foreign = Object.assign(new Error("from a duplicated bundle"), { name: "TRPCClientError" });
    assert.ok(isAliasError(foreign));
  });
});
