// The app's client, set up exactly as the README's Expo section says.
import { loggerLink } from "@trpc/client";
import { createAliasClient, isAliasError, type Tokens } from "alias-server";
import type { ChatSession, Reason, User } from "alias-server/bindings";
import { EventSource } from "eventsource";
import { fetch } from "expo/fetch";

let stored: Tokens | null = null;

export const api = createAliasClient({
  url: "https://api.example.com/trpc",
  getTokens: () => stored,
  setTokens: (tokens) => {
    stored = tokens;
  },
  onSignedOut: (reason) => console.warn("signed out:", reason),
  EventSource,
  fetch,
  links: [loggerLink({ enabled: (op) => op.direction === "down" && op.result instanceof Error })],
  maxItems: 20,
  maxURLLength: 4_000,
});

// Options may be passed as possibly-undefined values (exactOptionalPropertyTypes).
const configured: typeof fetch | undefined = Math.random() > 0.5 ? fetch : undefined;
createAliasClient({ url: "/trpc", getTokens: () => null, setTokens: () => {}, fetch: configured });

export async function outputsAreReal(): Promise<string> {
  const me: User = await api.users.me.query();
  const email: string = me.email;
  // @ts-expect-error: email is a string
  const wrong: number = me.email;

  const page = await api.chat.sessions.list.query({ limit: 20 });
  const next: string | null = page.nextCursor;
  const first: ChatSession | undefined = page.sessions[0]; // noUncheckedIndexedAccess
  // @ts-expect-error: an element may be missing
  const firstTitle: string = page.sessions[0].title;

  // @ts-expect-error: users.me is a query
  await api.users.me.mutate();
  // @ts-expect-error: limit is a number
  await api.chat.sessions.list.query({ limit: "20" });

  const subscription = api.system.streamCheck.subscribe(
    { count: 3 },
    {
      onData: ({ id, data }) => {
        const eventId: string = id;
        const seq: number = data.seq;
        void [eventId, seq];
      },
    },
  );
  subscription.unsubscribe();
  return [email, wrong, next, first?.title, firstTitle].join();
}

export function describeError(error: unknown): string {
  if (isAliasError(error, "api_key_missing")) {
    const reason: "api_key_missing" = error.data.reason; // data is defined with a reason
    return reason;
  }
  if (isAliasError(error)) {
    const reason: Reason | undefined = error.data?.reason;
    // @ts-expect-error: not a reason the server sends
    if (error.data?.reason === "teapot") return "";
    const emailError = error.data?.fieldErrors?.["email"];
    return emailError ?? reason ?? error.message;
  }
  // @ts-expect-error: not narrowed here
  return error.message;
}
