// Telling alias-server's errors apart: every failed call rejects with a `TRPCClientError`, whose
// `data` is the server's `AppErrorData` (tRPC code, HTTP status, `reason`, field errors) when the
// server answered, and `undefined` when the request never got an answer (network, abort).
import { TRPCClientError } from "@trpc/client";
import type { AppErrorData, AppRouter, Reason } from "../bindings/index.js";

/** What a call to alias-server rejects with. */
export type AliasError = TRPCClientError<AppRouter>;

/** An `AliasError` the server answered with this `reason`. */
export type AliasErrorWithReason<R extends Reason> = AliasError & {
  readonly data: AppErrorData & { reason: R };
};

/**
 * Narrows a caught value to the client's error type, so that `error.data?.reason` is the closed
 * `Reason` union and `error.data?.fieldErrors` the per-field messages. With a `reason`, also
 * checks that the server answered with it (then `error.data` is defined):
 *
 *   catch (error) {
 *     if (isAliasError(error, "api_key_missing")) return askForKey();
 *     if (isAliasError(error) && error.data?.code === "BAD_REQUEST") showFieldErrors(error.data.fieldErrors);
 *   }
 *
 * Recognises the error by name too, as tRPC's own `isTRPCClientError` does, so an error made by
 * a second copy of `@trpc/client` (a linked checkout, a duplicated bundle) still counts.
 */
export function isAliasError(error: unknown): error is AliasError;
export function isAliasError<R extends Reason>(
  error: unknown,
  reason: R,
): error is AliasErrorWithReason<R>;
export function isAliasError(error: unknown, reason?: Reason): boolean {
  const isClientError =
    error instanceof TRPCClientError ||
    (error instanceof Error && error.name === "TRPCClientError");
  if (!isClientError) return false;
  return reason === undefined || (error as AliasError).data?.reason === reason;
}

/** `error` as an `AliasError`: itself if it is one, else wrapped (its message kept). */
export function toAliasError(error: unknown): AliasError {
  if (isAliasError(error)) return error;
  return TRPCClientError.from<AppRouter>(error instanceof Error ? error : new Error(String(error)));
}

/** The server's `reason` if `error` is an UNAUTHORIZED answer, else `undefined`. */
export function unauthorizedReason(error: AliasError): Reason | undefined {
  return error.data?.code === "UNAUTHORIZED" ? error.data.reason : undefined;
}
