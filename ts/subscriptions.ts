// Subscriptions over Server-Sent Events (tRPC's `httpSubscriptionLink`), made to work where the
// runtime lacks pieces of the web platform, above all React Native's Hermes:
// - no `EventSource`: the app passes one (the `eventsource` package), else a clear error;
// - no `MessageEvent`, which that package constructs for every event (without it, it reconnects
//   forever with "MessageEvent is not defined"): a minimal one is installed when absent;
// - a `fetch` without a streaming body (React Native's built-in one): a clear error naming the
//   fix (`expo/fetch`) instead of a stream that never starts.
import { httpSubscriptionLink, TRPCClientError, type Operation, type TRPCLink } from "@trpc/client";
import { observable } from "@trpc/server/observable";
import type { AppRouter } from "../bindings/index.js";
import { bearerHeaders } from "./auth-link.js";
import { globalFetch, type FetchLike } from "./fetch.js";

/** `EventSource` classes `httpSubscriptionLink` accepts, e.g. the `eventsource` package's. */
export type EventSourceClass = NonNullable<Parameters<typeof httpSubscriptionLink>[0]["EventSource"]>;

export type SubscriptionTransport = {
  url: string;
  /** The app's class, else the runtime's global one (looked up when a subscription starts). */
  EventSource: EventSourceClass | undefined;
  /** The app's `fetch`, if it passed one (else the global one). */
  fetch: FetchLike | undefined;
};

/** Where a subscription's operation carries the function that ends it with an error. */
const FAIL_STREAM = "aliasFailStream";

/** Classes that take a `fetch` option (the `eventsource` package ≥ 4.1) say so with this. */
const SUPPORTS_FETCH = Symbol.for("eventsource.supports-fetch-override");

const INSTALL_EVENTSOURCE =
  "install the `eventsource` package (>= 4.1) and pass its `EventSource` to createAliasClient";

type MessageEventInit = {
  bubbles?: boolean;
  cancelable?: boolean;
  data?: unknown;
  origin?: string;
  lastEventId?: string;
};

type Globals = {
  EventSource?: EventSourceClass;
  MessageEvent?: unknown;
  Event?: unknown;
  TextDecoder?: unknown;
  navigator?: { product?: unknown };
};
const globals = globalThis as Globals;

/**
 * Installs a `MessageEvent` (type, `data`, `origin`, `lastEventId`) when the runtime has `Event`
 * but no `MessageEvent`, as Hermes. Never replaces one that exists.
 */
function ensureMessageEvent(): boolean {
  if (typeof globals.MessageEvent === "function") return true;
  if (typeof globals.Event !== "function") return false;
  class MessageEvent extends Event {
    readonly data: unknown;
    readonly origin: string;
    readonly lastEventId: string;
    readonly source = null;
    readonly ports: readonly never[] = [];
    constructor(type: string, init: MessageEventInit = {}) {
      super(type, init);
      this.data = init.data ?? null;
      this.origin = init.origin ?? "";
      this.lastEventId = init.lastEventId ?? "";
    }
  }
  Object.defineProperty(globalThis, "MessageEvent", {
    value: MessageEvent,
    writable: true,
    configurable: true,
  });
  return true;
}

const isReactNative = () => globals.navigator?.product === "ReactNative";

/** The EventSource class to use, or why subscriptions cannot work in this runtime. */
function eventSourceFor(transport: SubscriptionTransport): EventSourceClass | string {
  const EventSource = transport.EventSource ?? globals.EventSource;
  if (EventSource === undefined) return `this runtime has no EventSource: ${INSTALL_EVENTSOURCE}`;
  if (!(SUPPORTS_FETCH in EventSource)) return EventSource; // a native one: it brings its own
  if (!ensureMessageEvent()) {
    return "the `eventsource` package needs the runtime's `Event` and `EventTarget`, which this one lacks";
  }
  if (typeof globals.TextDecoder !== "function") {
    return "the `eventsource` package needs `TextDecoder`, which this runtime lacks (Expo SDK 52+ provides one)";
  }
  if (transport.fetch === undefined && isReactNative()) {
    return "React Native's built-in fetch cannot stream a response: pass `fetch` from `expo/fetch` to createAliasClient";
  }
  return EventSource;
}

/** Why `response` cannot feed an event stream, or `null` if it can. */
function streamingProblem(response: Response): string | null {
  if (response.status !== 200) return null; // the EventSource reports (and retries) these itself
  const body: unknown = response.body;
  const readable =
    typeof body === "object" && body !== null && typeof (body as { getReader?: unknown }).getReader === "function";
  if (readable) return null;
  return "the `fetch` given to createAliasClient returned a response without a streaming body (React Native's built-in fetch does this): pass `fetch` from `expo/fetch`";
}

function failStream(op: Operation, message: string): void {
  const fail = op.context[FAIL_STREAM];
  if (typeof fail === "function") fail(message);
}

/**
 * The terminating link for subscriptions: `httpSubscriptionLink` with the bearer header sent
 * through the EventSource's `fetch` (EventSource has no headers option). The token comes from
 * the auth link's attempt, so a reconnect after it expired ends in `token_expired` and the auth
 * link refreshes and resubscribes from the last event.
 */
export function subscriptionLink(transport: SubscriptionTransport): TRPCLink<AppRouter> {
  const fetch = transport.fetch ?? globalFetch;
  return (runtime) =>
    ({ op, next }) =>
      observable((observer) => {
        const fail = (message: string) =>
          observer.error(new TRPCClientError(`Subscription ${op.path} failed: ${message}`));
        const EventSource = eventSourceFor(transport);
        if (typeof EventSource === "string") return fail(EventSource);

        const sseLink = httpSubscriptionLink({
          url: transport.url,
          EventSource,
          eventSourceOptions: ({ op }) =>
            SUPPORTS_FETCH in EventSource
              ? {
                  fetch: async (input: string | URL, init: RequestInit) => {
                    const headers = new Headers(init.headers);
                    for (const [name, value] of Object.entries(bearerHeaders(op))) {
                      headers.set(name, value);
                    }
                    const response = await fetch(String(input), { ...init, headers });
                    const problem = streamingProblem(response);
                    if (problem !== null) failStream(op, problem);
                    return response;
                  },
                }
              : {},
        })(runtime);
        const context = { ...op.context, [FAIL_STREAM]: fail };
        const subscription = sseLink({ op: { ...op, context }, next }).subscribe(observer);
        return () => subscription.unsubscribe();
      });
}
