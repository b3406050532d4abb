// The link that signs every call with the stored access token and, when the server answers that
// the token expired, refreshes it once (for all parallel calls) and sends the call again.
import { createTRPCClient, httpLink, type Operation, type TRPCLink } from "@trpc/client";
import { observable, type Unsubscribable } from "@trpc/server/observable";
import type { AppRouter, AuthSession, Reason } from "../bindings/index.js";
import { toAliasError, unauthorizedReason, type AliasError } from "./errors.js";
import type { FetchEsque } from "./fetch.js";

/** What the client needs to sign calls; an `AuthSession` is one. */
export type Tokens = { accessToken: string; refreshToken: string };

/** The reasons for which the client discards the stored tokens and calls `onSignedOut`. */
export type SignedOutReason = Extract<
  Reason,
  "invalid_token" | "session_revoked" | "session_expired" | "refresh_token_reused"
>;

export type TokenStore = {
  getTokens(): Tokens | null | Promise<Tokens | null>;
  setTokens(tokens: Tokens | null): void | Promise<void>;
  onSignedOut?: ((reason: SignedOutReason) => void) | undefined;
};

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

/** The `Authorization` header for the token the auth link chose for `op` (none if signed out). */
export function bearerHeaders(op: Operation): Record<string, string> {
  const token = op.context[ACCESS_TOKEN];
  return typeof token === "string" ? { authorization: `Bearer ${token}` } : {};
}

/** As tRPC's own `retryLink` does: a resumed subscription asks for the events after the last. */
function withLastEventId(input: unknown, lastEventId: string): unknown {
  if (input !== undefined && input !== null && typeof input !== "object") return input;
  return { ...(input ?? {}), lastEventId };
}

export function authLink(
  url: string,
  store: TokenStore,
  fetch: FetchEsque,
): TRPCLink<AppRouter> {
  const { getTokens, setTokens, onSignedOut } = store;

  // Refreshes go through their own link-less client, not through this link, so a failing
  // refresh cannot itself trigger a refresh.
  const refresher = createTRPCClient<AppRouter>({ links: [httpLink({ url, fetch })] });

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
        const clientError = toAliasError(error);
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
  return () => ({ op, next }) =>
    observable((observer) => {
      let attemptSubscription: Unsubscribable | undefined;
      let disposed = false;
      let retried = false;
      let lastEventId: string | undefined;

      const fail = (error: unknown) => {
        if (!disposed) observer.error(toAliasError(error));
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

      const recover = async (error: AliasError, accessToken?: string) => {
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
}
