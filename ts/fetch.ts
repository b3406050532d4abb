// The `fetch` the app hands to the client, and its adaptation to what tRPC's links call.
import type { getFetch } from "@trpc/client";

/**
 * A WHATWG `fetch`: the global one, `expo/fetch`'s (which takes the URL only as a string), or a
 * wrapper of either. The client always calls it with a string URL.
 */
export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

/** The `fetch` type tRPC's HTTP links take (tRPC does not export it by name). */
export type FetchEsque = ReturnType<typeof getFetch>;

type FetchEsqueInit = Parameters<FetchEsque>[1];

function urlOf(input: Parameters<FetchEsque>[0]): string {
  if (typeof input === "string") return input;
  return "href" in input ? input.href : input.url;
}

/** `fetch` as tRPC's links call it: with whatever URL and init they build. */
export function fetchForTrpc(fetch: FetchLike): FetchEsque {
  return (input, init?: FetchEsqueInit) => {
    const { signal, ...rest } = init ?? {};
    // tRPC's init is RequestInit-shaped; only its optional `signal` may be `undefined`.
    const requestInit = (signal ? { ...rest, signal } : rest) as RequestInit;
    return fetch(urlOf(input), requestInit);
  };
}

/** The global `fetch`, looked up at call time (tests and polyfills may replace it). */
export const globalFetch: FetchLike = (url, init) => globalThis.fetch(url, init);
