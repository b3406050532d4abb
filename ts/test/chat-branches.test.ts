// Branches with the real `@trpc/client`: `chat.regenerate` and `chat.edit` (mutations whose reply
// is followed with `chat.follow`, like `chat.send`), `chat.branches.select`, and
// `chat.messages.list` showing the current branch with its "2/3" siblings.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import type { TRPCClient } from "@trpc/client";
import type { AppRouter, ChatEvent } from "../../bindings/index.ts";
import { FakeGemini } from "./fake-gemini.ts";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";
import { signedInClient, signUp } from "./signed-in.ts";

const API_KEY = "AIza-branches-key";
const TEST_MS = 30_000;

let gemini: FakeGemini;
let server: RunningServer;
let client: TRPCClient<AppRouter>;
let sessionId: string;

before(async () => {
  // The fake repeats what the user said last.
  gemini = new FakeGemini({ apiKey: API_KEY, reply: (said) => [said], title: "Branches" });
  server = await startServer({
    ALIAS_GEMINI_BASE_URL: await gemini.start(),
    ALIAS_AUTH_IP_LIMIT_PER_MINUTE: "1000",
  });
  client = signedInClient(server.url, await signUp(server.url));
  await withTimeout(
    client.apiKeys.set.mutate({ provider: "gemini", apiKey: API_KEY, validate: false }),
  );
  sessionId = (await withTimeout(client.chat.sessions.create.mutate({}))).id;
});

after(async () => {
  await server?.stop();
  await gemini?.stop();
});

/** Follows a reply to its end and answers its saved text. */
function followToEnd(messageId: string): Promise<string> {
  let unsubscribe = () => {};
  const ended = new Promise<string>((resolve, reject) => {
    let last: ChatEvent | undefined;
    const subscription = client.chat.follow.subscribe(
      { messageId },
      {
        onData: (event) => void (last = event.data),
        onError: reject,
        onComplete: () => (last?.type === "done" ? resolve(last.message.content) : reject(new Error("no done"))),
      },
    );
    unsubscribe = () => subscription.unsubscribe();
  });
  return withTimeout(ended, 15_000, "chat.follow").finally(() => unsubscribe());
}

const branch = async () =>
  (await withTimeout(client.chat.messages.list.query({ sessionId }))).messages;

describe("branches", () => {
  test("regenerate, edit and select", { timeout: TEST_MS }, async () => {
    const sent = await withTimeout(
      client.chat.send.mutate({ sessionId, content: "first version", clientMessageId: randomUUID() }),
    );
    assert.equal(await followToEnd(sent.replyMessageId), "first version");

    const again = await withTimeout(
      client.chat.regenerate.mutate({ messageId: sent.replyMessageId, clientMessageId: randomUUID() }),
    );
    assert.equal(again.userMessage.id, sent.userMessage.id, "the same question");
    assert.notEqual(again.replyMessageId, sent.replyMessageId);
    assert.equal(await followToEnd(again.replyMessageId), "first version");
    let messages = await branch();
    assert.deepEqual(messages[1]?.siblingIds, [sent.replyMessageId, again.replyMessageId]);
    assert.equal(messages[1]?.siblingIndex, 1);

    const edited = await withTimeout(
      client.chat.edit.mutate({
        messageId: sent.userMessage.id,
        content: "second version",
        clientMessageId: randomUUID(),
      }),
    );
    assert.equal(await followToEnd(edited.replyMessageId), "second version");
    messages = await branch();
    assert.deepEqual(
      messages.map((message) => message.content),
      ["second version", "second version"],
    );
    assert.deepEqual(messages[0]?.siblingIds, [sent.userMessage.id, edited.userMessage.id]);

    const session = await withTimeout(
      client.chat.branches.select.mutate({ messageId: sent.userMessage.id }),
    );
    assert.equal(session.currentLeafId, again.replyMessageId, "the newest answer under it");
    messages = await branch();
    assert.equal(messages[0]?.content, "first version");
    assert.equal(messages[1]?.id, again.replyMessageId);
  });
});
