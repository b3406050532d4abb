// Paginated procedures driven the way `infiniteQueryOptions` (@trpc/tanstack-react-query)
// drives them: the first page with `cursor: null` (its `initialCursor`), every page's input
// gets `cursor` and `direction` added, `getNextPageParam: (page) => page.nextCursor` picks the
// next, and a null `nextCursor` ends the list.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import type { TRPCClient } from "@trpc/client";
import type { inferRouterInputs } from "@trpc/server";
import {
  AI_PROVIDERS,
  DIRECTIONS,
  MESSAGE_STATUSES,
  THEMES,
  type AiProvider,
  type AppRouter,
  type Direction,
  type Message,
  type MessageStatus,
  type Theme,
} from "../../bindings/index.ts";
import { FakeGemini } from "./fake-gemini.ts";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";
import { signedInClient, signUp } from "./signed-in.ts";

const API_KEY = "AIza-pages-key";

// Compile-time: tRPC offers infinite queries on procedures whose input has `cursor`.
type Inputs = inferRouterInputs<AppRouter>;
type Infinite<I> = Exclude<I, void> extends { cursor?: unknown; direction?: unknown } ? true : false;
const infinite: [
  Infinite<Inputs["chat"]["sessions"]["list"]>,
  Infinite<Inputs["chat"]["messages"]["list"]>,
  Infinite<Inputs["audit"]["list"]>,
] = [true, true, true];
void infinite;

let gemini: FakeGemini;
let server: RunningServer;
let client: TRPCClient<AppRouter>;

before(async () => {
  gemini = new FakeGemini({ apiKey: API_KEY, reply: (said) => [`You said: ${said}`], title: "Pages" });
  server = await startServer({
    ALIAS_GEMINI_BASE_URL: await gemini.start(),
    ALIAS_AUTH_IP_LIMIT_PER_MINUTE: "1000",
  });
  client = signedInClient(server.url, await signUp(server.url));
  await withTimeout(
    client.apiKeys.set.mutate({ provider: "gemini", apiKey: API_KEY, validate: false }),
  );
});

after(async () => {
  await server?.stop();
  await gemini?.stop();
});

type Page = { nextCursor: string | null };
type PageInput = { cursor: string | null; direction: Direction };

/**
 * What `useInfiniteQuery` does for `fetchNextPage` until `hasNextPage` is false: each page's
 * input is the query's input plus `cursor` (the page param) and `direction`. `between` runs
 * after each page, for changes that happen while the user scrolls.
 */
async function nextPages<P extends Page>(
  fetchPage: (input: PageInput) => Promise<P>,
  between: (pageIndex: number) => Promise<void> = async () => {},
): Promise<P[]> {
  const pages: P[] = [];
  let pageParam: string | null = null; // initialPageParam: initialCursor ?? null
  while (pages.length < 20) {
    const page: P = await withTimeout(fetchPage({ cursor: pageParam, direction: "forward" }));
    pages.push(page);
    await between(pages.length - 1);
    if (page.nextCursor === null) return pages; // getNextPageParam → null: no next page
    pageParam = page.nextCursor;
  }
  throw new Error("the pages never end");
}

function assertIsoMillis(text: string) {
  assert.equal(new Date(text).toISOString(), text, "as Date.prototype.toISOString writes it");
}

describe("infinite queries", () => {
  test("chat.sessions.list: three pages, no duplicates, no gaps", async () => {
    for (let index = 0; index < 7; index++) {
      await withTimeout(client.chat.sessions.create.mutate({ title: `Chat ${index}` }));
    }
    const everything = await withTimeout(client.chat.sessions.list.query({ limit: 100 }));
    assert.equal(everything.nextCursor, null);
    const pages = await nextPages((page) => client.chat.sessions.list.query({ limit: 3, ...page }));
    assert.deepEqual(pages.map((page) => page.sessions.length), [3, 3, 1]);
    const ids = pages.flatMap((page) => page.sessions.map((session) => session.id));
    assert.deepEqual(ids, everything.sessions.map((session) => session.id));
    for (const session of everything.sessions) {
      assertIsoMillis(session.createdAt);
      assertIsoMillis(session.lastMessageAt);
    }

    // Backward from a cursor: the sessions just above it (here the 6th), in list order.
    const above = await withTimeout(
      client.chat.sessions.list.query({
        limit: 3,
        cursor: pages[1]?.nextCursor ?? null,
        direction: "backward",
      }),
    );
    assert.deepEqual(
      above.sessions.map((session) => session.id),
      everything.sessions.slice(2, 5).map((session) => session.id),
    );
    assert.notEqual(above.nextCursor, null, "two more above");
  });

  test("chat.messages.list: pages back from the newest while new messages arrive", async () => {
    const { id: sessionId } = await withTimeout(client.chat.sessions.create.mutate({}));
    const send = async (content: string) => {
      const sent = await withTimeout(
        client.chat.send.mutate({ sessionId, content, clientMessageId: randomUUID() }),
      );
      await followToDone(sent.replyMessageId);
    };
    for (let index = 0; index < 5; index++) await send(`message ${index}`);
    const before = await withTimeout(client.chat.messages.list.query({ sessionId, limit: 100 }));
    assert.equal(before.messages.length, 10);

    const pages = await nextPages(
      (page) => client.chat.messages.list.query({ sessionId, limit: 4, ...page }),
      async (pageIndex) => {
        if (pageIndex === 0) await send("arrives while the user scrolls back");
      },
    );
    assert.deepEqual(pages.map((page) => page.messages.length), [4, 4, 2]);
    // Newest page first, each page oldest first: the app shows the pages reversed.
    const shown: Message[] = [...pages].reverse().flatMap((page) => page.messages);
    assert.deepEqual(
      shown.map((message) => message.id),
      before.messages.map((message) => message.id),
      "every message once, in order",
    );
    shown.forEach((message) => assertIsoMillis(message.createdAt));

    // fetchPreviousPage from the newest page: what arrived since it was read.
    const newest = pages[0]?.messages.at(-1);
    assert.ok(newest);
    const newer = await withTimeout(
      client.chat.messages.list.query({ sessionId, limit: 4, cursor: newest.id, direction: "backward" }),
    );
    assert.deepEqual(
      newer.messages.map((message) => [message.role, message.content]),
      [
        ["user", "arrives while the user scrolls back"],
        ["assistant", "You said: arrives while the user scrolls back"],
      ],
    );
    assert.equal(newer.nextCursor, null);
  });

  test("audit.list pages the same way", async () => {
    const pages = await nextPages((page) => client.audit.list.query({ limit: 1, ...page }));
    const all = await withTimeout(client.audit.list.query({ limit: 100 }));
    assert.deepEqual(
      pages.flatMap((page) => page.events.map((event) => event.id)),
      all.events.map((event) => event.id),
    );
  });
});

function followToDone(messageId: string): Promise<void> {
  let unsubscribe = () => {};
  const done = new Promise<void>((resolve, reject) => {
    const subscription = client.chat.follow.subscribe(
      { messageId },
      { onError: reject, onComplete: () => resolve() },
    );
    unsubscribe = () => subscription.unsubscribe();
  });
  return withTimeout(done, 15_000, "chat.follow").finally(() => unsubscribe());
}

describe("the bindings' value lists", () => {
  test("are runtime constants typed as their unions", () => {
    const provider: AiProvider = AI_PROVIDERS[0];
    const theme: Theme = THEMES[2];
    const status: MessageStatus = MESSAGE_STATUSES[3];
    const direction: Direction = DIRECTIONS[1];
    assert.deepEqual([provider, theme, status, direction], ["gemini", "system", "error", "backward"]);
    assert.deepEqual(AI_PROVIDERS, ["gemini", "openai", "anthropic"]);
    assert.deepEqual(THEMES, ["light", "dark", "system"]);
    // Every member of the union is in the list (a compile-time check).
    type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
    const complete: [
      Same<(typeof AI_PROVIDERS)[number], AiProvider>,
      Same<(typeof THEMES)[number], Theme>,
      Same<(typeof MESSAGE_STATUSES)[number], MessageStatus>,
    ] = [true, true, true];
    void complete;
  });
});
