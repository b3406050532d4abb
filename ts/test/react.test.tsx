// The React Query example (ts/react/example.tsx) rendered with Testing Library in jsdom, against
// the real server through createAliasClient: useQuery, useInfiniteQuery over tRPC's cursor
// convention (sessions and messages), useMutation with invalidation, chat.send then
// useSubscription on chat.follow (Gemini played by a local fake), and errors narrowed with
// isAliasError.
import "./dom.ts";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, afterEach, before, describe, test } from "node:test";
import { QueryClient } from "@tanstack/react-query";
import { cleanup, fireEvent, render, screen, within } from "@testing-library/react";
import { EventSource } from "eventsource";
import type { ReactNode } from "react";
import { createAliasClient, type AliasClient, type Tokens } from "../client.ts";
import {
  AliasProvider,
  ChatReply,
  MessageList,
  NewSession,
  Profile,
  SessionList,
} from "../react/example.tsx";
import { API_KEY, FakeGemini, REPLY } from "./fake-gemini.ts";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";

let gemini: FakeGemini;
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
  gemini = new FakeGemini();
  server = await startServer({
    ALIAS_GEMINI_BASE_URL: await gemini.start(),
    ALIAS_AUTH_IP_LIMIT_PER_MINUTE: "1000",
  });
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
  await gemini?.stop();
});

/** Every test's QueryClient: cleared afterwards, else its cache timers keep the process alive. */
const queryClients: QueryClient[] = [];

afterEach(() => {
  cleanup();
  for (const queryClient of queryClients.splice(0)) queryClient.clear();
});

function renderWith(client: AliasClient, ui: ReactNode) {
  const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  queryClients.push(queryClient);
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

/** Sends a message through the vanilla client and follows its reply to the end. */
async function exchange(sessionId: string, content: string): Promise<void> {
  const sent = await signedIn.chat.send.mutate({ sessionId, content, clientMessageId: randomUUID() });
  const ended = new Promise<void>((resolve, reject) => {
    signedIn.chat.follow.subscribe(
      { messageId: sent.replyMessageId },
      { onComplete: resolve, onError: reject },
    );
  });
  await withTimeout(ended, 15_000, "chat.follow");
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

  describe("chat", () => {
    let sessionId: string;

    before(async () => {
      await signedIn.apiKeys.set.mutate({ provider: "gemini", apiKey: API_KEY, validate: false });
      sessionId = (await signedIn.chat.sessions.create.mutate({})).id;
    });

    test("useMutation on chat.send, then useSubscription on chat.follow streams the reply", async () => {
      renderWith(signedIn, <ChatReply sessionId={sessionId} content="Say hello" />);
      fireEvent.click(screen.getByRole("button", { name: "Send" }));
      await screen.findByText("Reply complete", {}, { timeout: 15_000 });
      assert.equal(screen.getByLabelText("reply").textContent, REPLY);
      assert.equal(gemini.streamCalls().length, 1);
    });

    test("chat.send without a key: the mutation's error, narrowed by reason", async () => {
      renderWith(signedIn, <ChatReply sessionId={sessionId} content="Hi" provider="openai" />);
      fireEvent.click(screen.getByRole("button", { name: "Send" }));
      const alert = await screen.findByRole("alert");
      assert.equal(alert.textContent, "Add an API key first");
    });

    test("useInfiniteQuery over chat.messages.list: three pages back, no duplicates, no gaps", async () => {
      await exchange(sessionId, "Second");
      await exchange(sessionId, "Third");
      const all = await signedIn.chat.messages.list.query({ sessionId, limit: 100 });
      const conversation = all.messages.map((message) => message.id);
      assert.equal(conversation.length, 6, "three exchanges");

      renderWith(signedIn, <MessageList sessionId={sessionId} pageSize={2} />);
      const shown = () =>
        within(screen.getByRole("region", { name: "messages" }))
          .queryAllByRole("listitem")
          .map((item) => item.getAttribute("data-id"));
      await screen.findByText("Pages: 1");
      assert.deepEqual(shown(), conversation.slice(4));

      fireEvent.click(screen.getByRole("button", { name: "Load older" }));
      await screen.findByText("Pages: 2");
      assert.deepEqual(shown(), conversation.slice(2));

      fireEvent.click(screen.getByRole("button", { name: "Load older" }));
      await screen.findByText("Pages: 3");
      await screen.findByText("No older messages");
      assert.deepEqual(shown(), conversation);
      assert.match(screen.getAllByRole("listitem")[0]?.textContent ?? "", /^user: Say hello$/);
    });
  });
});
