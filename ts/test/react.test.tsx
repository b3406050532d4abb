// The React Query example (ts/react/example.tsx) rendered with Testing Library in jsdom, against
// the real server through createAliasClient: useQuery, useInfiniteQuery over tRPC's cursor
// convention, useMutation with invalidation, and errors narrowed with isAliasError.
import "./dom.ts";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, afterEach, before, describe, test } from "node:test";
import { QueryClient } from "@tanstack/react-query";
import { cleanup, fireEvent, render, screen, within } from "@testing-library/react";
import { EventSource } from "eventsource";
import type { ReactNode } from "react";
import { createAliasClient, type AliasClient, type Tokens } from "../client.ts";
import { AliasProvider, NewSession, Profile, SessionList } from "../react/example.tsx";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";

let server: RunningServer;
let signedIn: AliasClient;
/** The sessions made in `before`, in the order `chat.sessions.list` returns them. */
let sessionIds: string[];

/** Password hashing is slow in a debug build. */
const SIGN_IN_MS = 15_000;
const SESSIONS = 7;

function clientWith(tokens: Tokens | null): AliasClient {
  let stored = tokens;
  return createAliasClient({
    url: server.url,
    getTokens: () => stored,
    setTokens: (next) => void (stored = next),
    EventSource,
  });
}

before(async () => {
  server = await startServer({ ALIAS_AUTH_IP_LIMIT_PER_MINUTE: "1000" });
  const session = await withTimeout(
    clientWith(null).auth.register.mutate({
      email: `react-${randomUUID()}@example.com`,
      password: "correct horse battery",
      name: "React Tester",
    }),
    SIGN_IN_MS,
    "auth.register",
  );
  signedIn = clientWith(session);
  for (let index = 1; index <= SESSIONS; index++) {
    await signedIn.chat.sessions.create.mutate({ title: `Session ${index}` });
  }
  const all = await signedIn.chat.sessions.list.query({ limit: 100 });
  sessionIds = all.sessions.map((session) => session.id);
  assert.equal(sessionIds.length, SESSIONS);
});

after(async () => {
  await server?.stop();
});

afterEach(() => cleanup());

function renderWith(client: AliasClient, ui: ReactNode) {
  const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  return render(
    <AliasProvider client={client} queryClient={queryClient}>
      {ui}
    </AliasProvider>,
  );
}

/** The session ids the list shows, in order. */
function shownSessionIds(): string[] {
  const list = screen.getByRole("region", { name: "sessions" });
  return within(list)
    .queryAllByRole("listitem")
    .map((item) => item.getAttribute("data-id") ?? "");
}

describe("the React Query example against the real server", () => {
  test("useQuery: the signed-in user", async () => {
    renderWith(signedIn, <Profile />);
    await screen.findByText("Signed in as React Tester");
  });

  test("useQuery: a signed-out call shows the server's reason", async () => {
    renderWith(clientWith(null), <Profile />);
    const alert = await screen.findByRole("alert");
    assert.equal(alert.textContent, "missing_token");
  });

  test("useInfiniteQuery over chat.sessions.list: three pages, no duplicates, no gaps", async () => {
    renderWith(signedIn, <SessionList pageSize={3} />);
    await screen.findByText("Pages: 1");
    assert.deepEqual(shownSessionIds(), sessionIds.slice(0, 3));

    fireEvent.click(screen.getByRole("button", { name: "Load more" }));
    await screen.findByText("Pages: 2");
    assert.deepEqual(shownSessionIds(), sessionIds.slice(0, 6));

    fireEvent.click(screen.getByRole("button", { name: "Load more" }));
    await screen.findByText("Pages: 3");
    await screen.findByText("No more sessions");
    assert.deepEqual(shownSessionIds(), sessionIds);
  });

  test("useMutation: a new session, then the list refreshed", async () => {
    const title = `Fresh ${randomUUID().slice(0, 8)}`;
    renderWith(
      signedIn,
      <>
        <NewSession title={title} />
        <SessionList pageSize={50} />
      </>,
    );
    await screen.findByText("Pages: 1");
    assert.equal(screen.queryByText(title), null);
    fireEvent.click(screen.getByRole("button", { name: "New session" }));
    await screen.findByText(`Created ${title}`);
    const item = await screen.findByText(title, { selector: "li" });
    assert.ok(item.getAttribute("data-id"));
  });
});
