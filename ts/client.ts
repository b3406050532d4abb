// The app's client for alias-server: the official `@trpc/client` with the bearer header added
// to every call and an expired access token refreshed once (for all parallel calls) and retried.
//
//   const api = createAliasClient({ url: `${API_URL}/trpc`, getTokens, setTokens, onSignedOut });
//   await setTokens(await api.auth.login.mutate({ email, password })); // AuthSession is a Tokens
//   const me = await api.users.me.query();
import {
  createTRPCClient,
  httpBatchLink,
  httpLink,
  isNonJsonSerializable,
  splitLink,
  type TRPCClient,
  type TRPCLink,
} from "@trpc/client";
import type { AppRouter, AuthSession, Reason } from "../bindings/index.js";
import { authLink, bearerHeaders, type SignedOutReason, type Tokens } from "./auth-link.js";
import { fetchForTrpc, globalFetch, type FetchLike } from "./fetch.js";
import { subscriptionLink, type EventSourceClass } from "./subscriptions.js";

export type { AppRouter, AuthSession, Reason, SignedOutReason, Tokens, FetchLike, EventSourceClass };
export { isAliasError, type AliasError, type AliasErrorWithReason } from "./errors.js";

/** Most calls in one batched request: the server's default `ALIAS_MAX_BATCH_SIZE`. */
export const DEFAULT_MAX_ITEMS = 50;
/**
 * Longest URL of a batched GET (queries). Below the 8 KiB request line that common proxies
 * (nginx's default buffers) accept; larger batches are split, and a single query this long
 * fails before it is sent.
 */
export const DEFAULT_MAX_URL_LENGTH = 8_000;

export type AliasClientOptions = {
  /** The tRPC endpoint, e.g. `https://api.example.com/trpc`. */
  url: string;
  /** The stored tokens, or `null` when signed out. Called for every call, so keep it cheap. */
  getTokens(): Tokens | null | Promise<Tokens | null>;
  /**
   * Stores tokens: the new pair after a refresh, `null` when the session ended. Not called on
   * sign-in: store the `AuthSession` that `auth.login`/`register`/`google`/`apple` return yourself.
   */
  setTokens(tokens: Tokens | null): void | Promise<void>;
  /**
   * Called once (after `setTokens(null)`) when the server rejected the stored tokens for good:
   * a refresh answered UNAUTHORIZED, or a call answered `session_revoked` / `session_expired`.
   * Not called for `missing_token` (no tokens to discard), nor when the stored tokens changed
   * meanwhile (the app signed in again). The failing call still rejects: with its own error, or
   * with the refresh's UNAUTHORIZED error (path `auth.refresh`) when the refresh failed.
   */
  onSignedOut?: ((reason: SignedOutReason) => void) | undefined;
  /**
   * For subscriptions where the runtime has no global one (React Native): the `eventsource`
   * package's (>= 4.1). The bearer header is sent only by classes that take a `fetch` option,
   * as that one does; others connect without it.
   */
  EventSource?: EventSourceClass | undefined;
  /**
   * Replaces the global `fetch` for every request (calls, refreshes and subscriptions). On React
   * Native pass `fetch` from `expo/fetch`: subscriptions need a response body that streams.
   */
  fetch?: FetchLike | undefined;
  /**
   * Your own links (`loggerLink`, a Sentry link, …), run in this order before the client's: each
   * sees every call once as the app made it, and its final result (after a token refresh and
   * retry). They must call `next` (the client's links end the chain).
   */
  links?: TRPCLink<AppRouter>[] | undefined;
  /** Most calls batched into one request; keep it at or below the server's `ALIAS_MAX_BATCH_SIZE`. Default 50. */
  maxItems?: number | undefined;
  /** Longest URL of a batched request of queries; longer batches are split. Default 8,000. */
  maxURLLength?: number | undefined;
};

export type AliasClient = TRPCClient<AppRouter>;

export function createAliasClient(options: AliasClientOptions): AliasClient {
  const { url } = options;
  const fetch = options.fetch ?? globalFetch;
  const trpcFetch = fetchForTrpc(fetch);

  return createTRPCClient<AppRouter>({
    links: [
      ...(options.links ?? []),
      authLink(url, options, trpcFetch),
      splitLink({
        condition: (op) => op.type === "subscription",
        true: subscriptionLink({
          url,
          EventSource: options.EventSource,
          fetch: options.fetch,
        }),
        false: splitLink({
          // FormData (`files.upload`) cannot be batched: it goes alone, as tRPC documents.
          condition: (op) => isNonJsonSerializable(op.input),
          true: httpLink({ url, fetch: trpcFetch, headers: ({ op }) => bearerHeaders(op) }),
          false: httpBatchLink({
            url,
            fetch: trpcFetch,
            maxItems: options.maxItems ?? DEFAULT_MAX_ITEMS,
            maxURLLength: options.maxURLLength ?? DEFAULT_MAX_URL_LENGTH,
            // Calls batched together started together, so they normally carry the same token;
            // if a refresh landed in between, the last one read the newer token.
            headers: ({ opList }) => {
              const op = opList[opList.length - 1] ?? opList[0];
              return op === undefined ? {} : bearerHeaders(op);
            },
          }),
        }),
      }),
    ],
  });
}
