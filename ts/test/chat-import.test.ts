// End-to-end: `chat.import` takes either JSON or a FormData file through the real
// @trpc/client (createAliasClient routes FormData to httpLink), and `chat.export` answers the
// text itself.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { createAliasClient, type Tokens } from "../client.ts";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";

let server: RunningServer;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server?.stop();
});

/** A ChatGPT `conversations.json` with one exchange. */
const CHATGPT = JSON.stringify([
  {
    title: "Imported trip",
    create_time: 1_700_000_000,
    current_node: "b",
    mapping: {
      a: {
        id: "a",
        parent: null,
        children: ["b"],
        message: { author: { role: "user" }, content: { content_type: "text", parts: ["Plan Rome"] }, create_time: 1_700_000_000 },
      },
      b: {
        id: "b",
        parent: "a",
        children: [],
        message: { author: { role: "assistant" }, content: { content_type: "text", parts: ["Day one: the Forum."] }, create_time: 1_700_000_010 },
      },
    },
  },
]);

test("chat.import takes a FormData file and JSON; chat.export answers the text", async () => {
  let stored: Tokens | null = null;
  const api = createAliasClient({
    url: server.url,
    getTokens: () => stored,
    setTokens: (tokens) => void (stored = tokens),
  });
  stored = await withTimeout(
    api.auth.register.mutate({
      email: `import-${randomUUID()}@example.com`,
      password: "correct horse battery",
      name: "Importer",
    }),
    15_000,
    "auth.register",
  );

  const data = new FormData();
  data.append("file", new Blob([CHATGPT], { type: "application/json" }), "conversations.json");
  const fromFile = await withTimeout(api.chat.import.mutate(data), 15_000, "chat.import (FormData)");
  assert.equal(fromFile.sessions.length, 1);

  const sessionId = fromFile.sessions[0]!.id;
  const markdown = await api.chat.export.query({ sessionId, format: "markdown" });
  assert.equal(typeof markdown, "string");
  assert.match(markdown, /Day one: the Forum\./);

  const json = await api.chat.export.query({ sessionId, format: "json" });
  const again = await api.chat.import.mutate({ data: json });
  assert.equal(again.sessions.length, 1);
  assert.notEqual(again.sessions[0]!.id, sessionId);
});
