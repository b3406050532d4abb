// Deliberate mistakes: ts/test/consumer.test.ts checks that tsc reports each one (the code named
// in its comment, on its line) and nothing else, so real types cannot silently become `any`/`{}`.
import { createAliasClient } from "alias-server";
import { api } from "./src/api";

export async function mistakes() {
  const me = await api.users.me.query();
  const id: number = me.id; // TS2322
  me.nope; // TS2339
  await api.chat.sessions.get.query({ id: 1 }); // TS2322
  await api.auth.login.query({ email: "a@example.com", password: "x" }); // TS2339
  createAliasClient({ url: "/trpc", getTokens: () => "token", setTokens: () => {} }); // TS2322
  api.chat.send.subscribe({ sessionId: "s", content: "hi", clientMessageId: "c" }, {}); // TS2339
  return id;
}
