// End-to-end: createAliasClient (the real @trpc/client underneath) against the real server, with
// one-second access tokens so that they expire during the run.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { TRPCClientError } from "@trpc/client";
import { EventSource } from "eventsource";
import type { AppRouter } from "../../bindings/index.ts";
import {
  createAliasClient,
  type AliasClient,
  type SignedOutReason,
  type Tokens,
} from "../client.ts";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";

let server: RunningServer;

before(async () => {
  server = await startServer({
    ALIAS_ACCESS_TTL_SECONDS: "1",
    ALIAS_AUTH_IP_LIMIT_PER_MINUTE: "1000",
  });
});

after(async () => {
  await server?.stop();
});

/** Password hashing is slow in a debug build. */
const SIGN_IN_MS = 15_000;

type Sent = { procedures: string[]; authorization: string | null };

/** A client with an in-memory token store, recording its requests and callbacks. */
function harness(initial: Tokens | null = null) {
  let stored = initial;
  const saved: (Tokens | null)[] = [];
  const signedOut: SignedOutReason[] = [];
  const requests: Sent[] = [];
  const client: AliasClient = createAliasClient({
    url: server.url,
    getTokens: async () => stored, // async, like the app's secure storage
    setTokens: async (tokens) => {
      stored = tokens;
      saved.push(tokens);
    },
    onSignedOut: (reason) => void signedOut.push(reason),
    EventSource,
    fetch: (input, init) => {
      const url = new URL(input);
      requests.push({
        procedures: decodeURIComponent(url.pathname.split("/").pop() ?? "").split(","),
        authorization: new Headers(init?.headers).get("authorization"),
      });
      return fetch(input, init);
    },
  });
  return {
    client,
    saved,
    signedOut,
    requests,
    stored: () => stored,
    store: (tokens: Tokens | null) => void (stored = tokens),
    /** Requests that called `path` (a batch counts once). */
    sent: (path: string) => requests.filter((request) => request.procedures.includes(path)),
  };
}

const uniqueEmail = (label: string) => `${label}-${randomUUID()}@example.com`;

/** Registers a new account through `client` and stores its tokens, as the app does. */
async function signUp(h: ReturnType<typeof harness>, label: string) {
  const session = await withTimeout(
    h.client.auth.register.mutate({
      email: uniqueEmail(label),
      password: "correct horse battery",
      name: label,
    }),
    SIGN_IN_MS,
    "auth.register",
  );
  h.store(session); // an AuthSession is a Tokens
  return session;
}

async function rejection(promise: Promise<unknown>): Promise<TRPCClientError<AppRouter>> {
  const error = await promise.then(
    () => assert.fail("expected an error"),
    (error: unknown) => error,
  );
  assert.ok(error instanceof TRPCClientError, `not a TRPCClientError: ${error}`);
  return error as TRPCClientError<AppRouter>;
}

/** Waits until the server rejects `accessToken` as expired (TTL 1 s plus its 5 s leeway). */
async function untilExpired(accessToken: string) {
  const deadline = Date.now() + 12_000;
  while (Date.now() < deadline) {
    const response = await fetch(`${server.url}/users.me`, {
      headers: { authorization: `Bearer ${accessToken}` },
    });
    const body = (await response.json()) as { error?: { data?: { reason?: string } } };
    if (body.error?.data?.reason === "token_expired") return;
    await sleep(250);
  }
  assert.fail("the access token did not expire within 12 s");
}

describe("createAliasClient", () => {
  test("sends the stored access token as a bearer header", async () => {
    const h = harness();
    const session = await signUp(h, "bearer");
    assert.equal(h.sent("auth.register")[0]?.authorization, null, "no header while signed out");

    const me = await withTimeout(h.client.users.me.query());
    assert.equal(me.id, session.user.id);
    assert.equal(me.email, session.user.email);
    assert.deepEqual(
      h.sent("users.me").map((request) => request.authorization),
      [`Bearer ${session.accessToken}`],
    );
  });

  test("sends the bearer header on subscriptions too", async () => {
    const h = harness();
    const session = await signUp(h, "sse");
    const seqs: number[] = [];
    const signal = AbortSignal.timeout(5_000);
    for await (const tick of h.client.system.streamCheck.subscribe({ count: 2 }, { signal })) {
      seqs.push(tick.data.seq);
    }
    assert.deepEqual(seqs, [1, 2]);
    assert.equal(h.sent("system.streamCheck")[0]?.authorization, `Bearer ${session.accessToken}`);
  });

  test("after auth.logout, a call signs out with session_revoked", async () => {
    const h = harness();
    const session = await signUp(h, "logout");
    await withTimeout(h.client.auth.logout.mutate());

    const error = await rejection(withTimeout(h.client.users.me.query()));
    assert.equal(error.data?.code, "UNAUTHORIZED");
    assert.equal(error.data?.reason, "session_revoked");
    assert.deepEqual(h.signedOut, ["session_revoked"]);
    assert.deepEqual(h.saved, [null]);
    assert.equal(h.stored(), null);
    assert.equal(h.sent("auth.refresh").length, 0, "a revoked session is not refreshed");

    // Signed out now: calls go without a header, and do not sign out again.
    const again = await rejection(withTimeout(h.client.users.me.query()));
    assert.equal(again.data?.reason, "missing_token");
    assert.deepEqual(h.signedOut, ["session_revoked"]);
    assert.notEqual(h.sent("users.me").at(-1)?.authorization, `Bearer ${session.accessToken}`);
  });

  describe("once the access token expired", () => {
    // One wait (about 7 s) for every test in here: both accounts are signed up first.
    let parallel: ReturnType<typeof harness>;
    let failing: ReturnType<typeof harness>;
    let parallelSession: Tokens;
    let failingSession: Tokens;

    before(async () => {
      parallel = harness();
      failing = harness();
      parallelSession = await signUp(parallel, "parallel");
      failingSession = await signUp(failing, "failing");
      await withTimeout(untilExpired(failingSession.accessToken), 15_000, "token expiry");
      await withTimeout(untilExpired(parallelSession.accessToken), 15_000, "token expiry");
    });

    test("parallel calls share one refresh, then each retries once", async () => {
      const { client, saved, signedOut, stored, sent } = parallel;
      const results = await withTimeout(
        Promise.all([client.users.me.query(), client.users.me.query(), client.users.me.query()]),
        10_000,
        "parallel users.me",
      );
      for (const me of results) assert.equal(me.email, results[0]?.email);
      assert.equal(sent("auth.refresh").length, 1, "exactly one auth.refresh request");

      const renewed = stored();
      assert.ok(renewed);
      assert.deepEqual(saved, [renewed], "setTokens got the new pair, once");
      assert.notEqual(renewed.refreshToken, parallelSession.refreshToken, "old refresh token kept");
      assert.notEqual(renewed.accessToken, parallelSession.accessToken);
      assert.equal(sent("users.me").at(-1)?.authorization, `Bearer ${renewed.accessToken}`);
      assert.deepEqual(signedOut, []);

      // The new token works without another refresh.
      await withTimeout(client.users.me.query());
      assert.equal(sent("auth.refresh").length, 1);
    });

    test("a failing refresh signs out and the call rejects with UNAUTHORIZED", async () => {
      const { client, saved, signedOut, stored, store, sent } = failing;
      store({ accessToken: failingSession.accessToken, refreshToken: "garbage" });

      const error = await rejection(withTimeout(client.users.me.query(), 10_000, "users.me"));
      assert.equal(error.data?.code, "UNAUTHORIZED");
      assert.equal(error.data?.reason, "invalid_token");
      assert.equal(sent("auth.refresh").length, 1);
      assert.deepEqual(signedOut, ["invalid_token"]);
      assert.deepEqual(saved, [null]);
      assert.equal(stored(), null);
    });
  });
});
