// Compile-time checks of the generated AppRouter: `tsc` fails if an expected error disappears
// (an unused `@ts-expect-error` is itself an error) or if a positive check stops compiling.
import { TRPCClientError } from "@trpc/client";
import type { inferRouterOutputs } from "@trpc/server";
import type { AppRouter, ChatEvent, ErrorCode } from "../../bindings/index.ts";
import { createAliasClient, type AuthSession, type Tokens } from "../client.ts";
import { createClient } from "../example-client.ts";

const client = createClient("http://127.0.0.1:8080/trpc");

export async function wrongUses() {
  // @ts-expect-error: no such procedure
  await client.system.nope.query();

  // @ts-expect-error: health is a query, not a mutation
  await client.system.health.mutate();

  // @ts-expect-error: count is a number
  client.system.streamCheck.subscribe({ count: "3" }, {});

  // @ts-expect-error: database is "sqlite" | "postgres"
  if ((await client.system.health.query()).database === "mysql") return;

  // @ts-expect-error: version is a string
  const version: number = (await client.system.health.query()).version;
  return version;
}

export async function rightUses() {
  const health = await client.system.health.query();
  const database: "sqlite" | "postgres" = health.database;
  const status: "ok" = health.status;

  const subscription = client.system.streamCheck.subscribe(
    { count: 5, lastEventId: "3" },
    {
      onData: ({ id, data }) => {
        const eventId: string = id;
        const seq: number = data.seq;
        const at: string = data.at;
        void [eventId, seq, at];
      },
    },
  );
  subscription.unsubscribe();
  // Without callbacks, subscribe returns an async iterator; input may be omitted.
  for await (const tick of client.system.streamCheck.subscribe(undefined)) {
    const seq: number = tick.data.seq;
    void seq;
  }

  try {
    await client.system.health.query();
  } catch (error) {
    if (error instanceof TRPCClientError) {
      const typed = error as TRPCClientError<AppRouter>;
      const code: ErrorCode | undefined = typed.data?.code;
      const httpStatus: number | undefined = typed.data?.httpStatus;
      const fieldErrors: { [field: string]: string } | undefined = typed.data?.fieldErrors;
      // @ts-expect-error: not a tRPC error code
      const bogus: boolean = typed.data?.code === "TEAPOT";
      void [code, httpStatus, fieldErrors, bogus];
    }
  }
  return { database, status };
}

export async function aliasClientUses() {
  const tokens = { accessToken: "a", refreshToken: "r" };
  const api = createAliasClient({
    url: "http://127.0.0.1:8080/trpc",
    getTokens: async () => tokens,
    setTokens: () => {},
    onSignedOut: (reason) => {
      // @ts-expect-error: missing_token never signs out
      if (reason === "missing_token") return;
    },
  });
  const credentials = { email: "a@example.com", password: "secret123" };
  const session: AuthSession = await api.auth.login.mutate(credentials);
  const stored: Tokens = session; // an AuthSession is a Tokens, for setTokens
  const email: string = (await api.users.me.query()).email;

  // @ts-expect-error: getTokens must give Tokens or null, not a bare access token
  createAliasClient({ url: "", getTokens: () => "token", setTokens: () => {} });
  // @ts-expect-error: setTokens is required, to store refreshed tokens
  createAliasClient({ url: "", getTokens: () => null });
  // @ts-expect-error: users.me takes no input
  await api.users.me.query({ id: "x" });
  // @ts-expect-error: maxItems is a number
  createAliasClient({ url: "", getTokens: () => null, setTokens: () => {}, maxItems: "50" });
  // @ts-expect-error: links are tRPC links
  createAliasClient({ url: "", getTokens: () => null, setTokens: () => {}, links: [() => 1] });
  return { stored, email };
}

// What `chat.follow`'s onData receives is exactly the bindings' `ChatEvent` (JSON fields are
// typed `JsonValue`, not `unknown`, which tRPC's inference would turn optional).
type FollowEvent = inferRouterOutputs<AppRouter>["chat"]["follow"] extends AsyncIterable<infer T> ? T : never;
export const chatEventFromStream = (event: FollowEvent): ChatEvent => event.data;
