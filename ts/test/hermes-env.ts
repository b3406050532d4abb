// Makes this Node process look like React Native on Hermes to the client: no `MessageEvent`, no
// `EventSource`, `navigator.product === "ReactNative"`, and a global `fetch` that, like React
// Native's (whatwg-fetch over XMLHttpRequest), resolves only once the whole body has arrived and
// has no streaming `body`. Imported first by hermes.test.ts (each test file runs in its own
// process). What Expo provides (`TextDecoder`, `URL`, `Event`, `EventTarget`) stays.

/** Node's own `fetch`, which streams: the test's stand-in for `expo/fetch`. */
export const streamingFetch: typeof fetch = globalThis.fetch.bind(globalThis);

/** Node's `MessageEvent`, for the check that an existing one is never replaced. */
export const nativeMessageEvent = globalThis.MessageEvent;

/** tRPC requests the non-streaming global `fetch` received (the server's /ready checks aside). */
export const builtInFetchCalls: string[] = [];

/** React Native's built-in `fetch`: buffers the whole response, and its `body` is undefined. */
export const nonStreamingFetch: typeof fetch = async (input, init) => {
  const url = String(input instanceof Request ? input.url : input);
  if (url.includes("/trpc/")) builtInFetchCalls.push(url);
  const streamed = await streamingFetch(input, init);
  const text = await streamed.text();
  const response = new Response(text, {
    status: streamed.status,
    statusText: streamed.statusText,
    headers: streamed.headers,
  });
  Object.defineProperty(response, "body", { value: undefined });
  return response;
};

Reflect.deleteProperty(globalThis, "MessageEvent");
Reflect.deleteProperty(globalThis, "EventSource");
Object.defineProperty(globalThis, "navigator", {
  value: { product: "ReactNative" },
  configurable: true,
  writable: true,
});
globalThis.fetch = nonStreamingFetch;
