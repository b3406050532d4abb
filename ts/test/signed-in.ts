// A signed-in client over tRPC's own links, for tests of the wire format: subscriptions over
// `httpSubscriptionLink` (the bearer header through the `eventsource` ponyfill's fetch), other
// calls batched over `httpBatchLink` or `httpBatchStreamLink`.
import { randomUUID } from "node:crypto";
import {
  createTRPCClient,
  httpBatchLink,
  httpBatchStreamLink,
  httpLink,
  httpSubscriptionLink,
  splitLink,
  type TRPCClient,
} from "@trpc/client";
import { EventSource } from "eventsource";
import type { AppRouter } from "../../bindings/index.ts";
import { withTimeout } from "./helpers.ts";

/** Password hashing is slow in a debug build. */
const SIGN_UP_MS = 15_000;

/** Registers a fresh account and returns its access token. */
export async function signUp(url: string): Promise<string> {
  const client = createTRPCClient<AppRouter>({ links: [httpLink({ url })] });
  const session = await withTimeout(
    client.auth.register.mutate({
      email: `wire-${randomUUID()}@example.com`,
      password: "correct horse battery",
      name: "Wire Tester",
    }),
    SIGN_UP_MS,
    "auth.register",
  );
  return session.accessToken;
}

/** What `httpSubscriptionLink` needs to send the bearer header through the ponyfill (and
 * `doFetch`, e.g. one that counts the requests). */
export function subscriptionLink(url: string, token: string, doFetch: typeof fetch = fetch) {
  const authorization = `Bearer ${token}`;
  return httpSubscriptionLink({
    url,
    EventSource,
    eventSourceOptions: {
      fetch: (input: string | URL, init: RequestInit) => {
        const headers = new Headers(init.headers);
        headers.set("authorization", authorization);
        return doFetch(input, { ...init, headers });
      },
    },
  });
}

export type Batching = "batch" | "batchStream";

export function signedInClient(
  url: string,
  token: string,
  batching: Batching = "batch",
  doFetch: typeof fetch = fetch,
): TRPCClient<AppRouter> {
  const options = { url, fetch: doFetch, headers: { authorization: `Bearer ${token}` } };
  return createTRPCClient<AppRouter>({
    links: [
      splitLink({
        condition: (op) => op.type === "subscription",
        true: subscriptionLink(url, token),
        false: batching === "batch" ? httpBatchLink(options) : httpBatchStreamLink(options),
      }),
    ],
  });
}
