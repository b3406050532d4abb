// `expo/fetch` as the `expo` package declares it (src/winter/fetch: fetch.ts, fetch.types.ts,
// FetchResponse.ts), so that passing it to createAliasClient is checked without installing expo.
declare module "expo/fetch" {
  export interface FetchRequestInit {
    body?: BodyInit | null;
    credentials?: RequestCredentials;
    headers?: HeadersInit;
    method?: string;
    signal?: AbortSignal | null;
    redirect?: RequestRedirect;
    integrity?: string;
    keepalive?: boolean;
    mode?: RequestMode;
    referrer?: string;
    window?: any;
  }
  /** A class that `implements Response` (its body a web-streams ReadableStream). */
  export interface FetchResponse extends Response {}
  export function fetch(url: string, init?: FetchRequestInit): Promise<FetchResponse>;
}
