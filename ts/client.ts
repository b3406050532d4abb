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
  httpSubscriptionLink,
  splitLink,
  TRPCClientError,
  type Operation,
  type TRPCClient,
  type TRPCLink,
} from "@trpc/client";
import { observable, type Unsubscribable } from "@trpc/server/observable";
import type { AppRouter, AuthSession, Reason } from "../bindings/index.ts";

export type { AppRouter, AuthSession, Reason };

/** What the client needs to sign calls; an `AuthSession` is one. */
export type Tokens = { accessToken: string; refreshToken: string };

/** The reasons for which the client discards the stored tokens and calls `onSignedOut`. */
export type SignedOutReason = Extract<
  Reason,
  "invalid_token" | "session_revoked" | "session_expired" | "refresh_token_reused"
>;

/** `EventSource` classes `httpSubscriptionLink` accepts, e.g. the `eventsource` package's. */
type EventSourceClass = NonNullable<Parameters<typeof httpSubscriptionLink>[0]["EventSource"]>;

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
  onSignedOut?(reason: SignedOutReason): void;
  /**
   * For subscriptions, where there is no global one. The bearer header is sent only by classes
   * that take a `fetch` option (the `eventsource` package ≥ 4.1); others connect without it.
   */
  EventSource?: EventSourceClass;
  /** Replaces the global `fetch` for every request (calls, refreshes and subscriptions). */
  fetch?: typeof fetch;
};

export type AliasClient = TRPCClient<AppRouter>;

/** Where the auth link puts the access token an attempt is sent with, for the transports. */
const ACCESS_TOKEN = "aliasAccessToken";

/** Reasons that a new access token may fix. `invalid_token` too: after a signing-key rotation
 *  the old access tokens are invalid but the refresh tokens (kept in the database) still work. */
const REFRESHABLE: ReadonlySet<string> = new Set<Reason>(["token_expired", "invalid_token"]);

const SIGNED_OUT: ReadonlySet<string> = new Set<SignedOutReason>([
  "invalid_token",
  "session_revoked",
  "session_expired",
  "refresh_token_reused",
]);

/** The server's `reason` if `error` is an UNAUTHORIZED answer, else `undefined`. */
function unauthorizedReason(error: TRPCClientError<AppRouter>): Reason | undefined {
  return error.data?.code === "UNAUTHORIZED" ? error.data.reason : undefined;
}

function toClientError(error: unknown): TRPCClientError<AppRouter> {
  if (error instanceof TRPCClientError) return error as TRPCClientError<AppRouter>;
  return TRPCClientError.from<AppRouter>(error instanceof Error ? error : new Error(String(error)));
}

function tokenOf(op: Operation): string | undefined {
  const token = op.context[ACCESS_TOKEN];
  return typeof token === "string" ? token : undefined;
}

/** As tRPC's own `retryLink` does: a resumed subscription asks for the events after the last. */
function withLastEventId(input: unknown, lastEventId: string): unknown {
  if (input !== undefined && input !== null && typeof input !== "object") return input;
  return { ...(input ?? {}), lastEventId };
}

export function createAliasClient(options: AliasClientOptions): AliasClient {
  const { url, getTokens, setTokens, onSignedOut } = options;
  const doFetch: typeof fetch = (input, init) => (options.fetch ?? fetch)(input, init);

  // Refreshes go through their own link-less client, not through the auth link below, so a
  // failing refresh cannot itself trigger a refresh.
  const refresher = createTRPCClient<AppRouter>({ links: [httpLink({ url, fetch: doFetch })] });

  /** The access token we last signed out for: several calls failing together sign out once. */
  let signedOutFor: string | undefined;

  async function signOut(reason: Reason | undefined, failedAccessToken: string): Promise<void> {
    if (signedOutFor === failedAccessToken) return;
    signedOutFor = failedAccessToken;
    const stored = await getTokens();
    if (stored?.accessToken !== failedAccessToken) return; // signed out already, or in again
    await setTokens(null);
    // Every UNAUTHORIZED answer carries a reason; one without is treated as an unusable token.
    const known = reason !== undefined && SIGNED_OUT.has(reason);
    onSignedOut?.(known ? (reason as SignedOutReason) : "invalid_token");
  }

  /**
   * Single flight: while one refresh runs, every caller waits for it instead of starting its own
   * (refresh tokens are single-use; a second use revokes the session). Resolves `true` when
   * there are tokens to retry with, `false` when there are none; rejects with the refresh's
   * error (after signing out if it was UNAUTHORIZED).
   */
  let refreshing: Promise<boolean> | null = null;
  function renew(staleAccessToken: string): Promise<boolean> {
    refreshing ??= (async () => {
      const tokens = await getTokens();
      if (tokens === null) return false;
      // An earlier refresh (or a new sign-in) already replaced the token this call failed with.
      if (tokens.accessToken !== staleAccessToken) return true;
      let session: AuthSession;
      try {
        session = await refresher.auth.refresh.mutate({ refreshToken: tokens.refreshToken });
      } catch (error) {
        const clientError = toClientError(error);
        if (clientError.data?.code === "UNAUTHORIZED") {
          await signOut(unauthorizedReason(clientError), tokens.accessToken);
        }
        throw clientError;
      }
      // Don't overwrite tokens the app stored meanwhile (signed out, or in as someone else).
      if ((await getTokens())?.accessToken !== tokens.accessToken) return true;
      await setTokens({ accessToken: session.accessToken, refreshToken: session.refreshToken });
      return true;
    })().finally(() => {
      refreshing = null;
    });
    return refreshing;
  }

  /**
   * Sends each operation with the current access token; on a refreshable UNAUTHORIZED it
   * renews the tokens and sends it again, once per failure (a subscription that delivered
   * events since its last retry may refresh again when its connection later fails).
   */
  const authLink: TRPCLink<AppRouter> = () => ({ op, next }) =>
    observable((observer) => {
      let attemptSubscription: Unsubscribable | undefined;
      let disposed = false;
      let retried = false;
      let lastEventId: string | undefined;

      const fail = (error: unknown) => {
        if (!disposed) observer.error(toClientError(error));
      };

      const attempt = async () => {
        const accessToken = (await getTokens())?.accessToken;
        if (disposed) return;
        const input = lastEventId === undefined ? op.input : withLastEventId(op.input, lastEventId);
        const context = { ...op.context, [ACCESS_TOKEN]: accessToken };
        attemptSubscription = next({ ...op, input, context }).subscribe({
          next(envelope) {
            const { result } = envelope;
            if (result.type === undefined || result.type === "data") {
              retried = false;
              const id = "id" in result ? result.id : undefined;
              if (op.type === "subscription" && typeof id === "string") lastEventId = id;
            }
            observer.next(envelope);
          },
          complete: () => observer.complete(),
          error: (error) => void recover(error, accessToken).catch(fail),
        });
      };

      const recover = async (error: TRPCClientError<AppRouter>, accessToken?: string) => {
        const reason = unauthorizedReason(error);
        if (reason === undefined || accessToken === undefined) return fail(error);
        if (REFRESHABLE.has(reason) && !retried) {
          retried = true;
          if (await renew(accessToken)) return disposed ? undefined : attempt();
          return fail(error);
        }
        // A refreshable reason again after the retry is not a sign-out: the refresh said yes.
        if (SIGNED_OUT.has(reason) && !REFRESHABLE.has(reason)) await signOut(reason, accessToken);
        fail(error);
      };

      attempt().catch(fail);
      return () => {
        disposed = true;
        attemptSubscription?.unsubscribe();
      };
    });

  const bearer = (op: Operation): Record<string, string> => {
    const token = tokenOf(op);
    return token === undefined ? {} : { authorization: `Bearer ${token}` };
  };

  const EventSource = options.EventSource;
  const eventSourceTakesFetch =
    Symbol.for("eventsource.supports-fetch-override") in
    Object(EventSource ?? (globalThis as { EventSource?: unknown }).EventSource);

  return createTRPCClient<AppRouter>({
    links: [
      authLink,
      splitLink({
        condition: (op) => op.type === "subscription",
        true: httpSubscriptionLink({
          url,
          EventSource,
          // EventSource has no headers option; the ponyfill lets us wrap its fetch instead. The
          // token comes from the attempt, so a reconnect after it expired ends in `token_expired`
          // and the auth link refreshes and resubscribes from the last event.
          eventSourceOptions: ({ op }) =>
            eventSourceTakesFetch
              ? {
                  fetch: (input: string | URL, init: RequestInit) => {
                    const headers = new Headers(init.headers);
                    for (const [name, value] of Object.entries(bearer(op))) {
                      headers.set(name, value);
                    }
                    return doFetch(input, { ...init, headers });
                  },
                }
              : {},
        }),
        false: httpBatchLink({
          url,
          fetch: doFetch,
          maxItems: 50, // the server's default ALIAS_MAX_BATCH_SIZE
          // Calls batched together started together, so they normally carry the same token; if
          // a refresh landed in between, the last one read the newer token.
          headers: ({ opList }) => bearer(opList[opList.length - 1] ?? opList[0]),
        }),
      }),
    ],
  });
}
