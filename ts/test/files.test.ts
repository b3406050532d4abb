// End-to-end: `files.upload` takes a FormData through the real @trpc/client, routed to httpLink
// by `splitLink` + `isNonJsonSerializable` (in createAliasClient, and as tRPC's docs show).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import {
  createTRPCClient,
  httpBatchLink,
  httpLink,
  isNonJsonSerializable,
  splitLink,
  TRPCClientError,
} from "@trpc/client";
import type { AppRouter } from "../../bindings/index.ts";
import { createAliasClient, isAliasError, type Tokens } from "../client.ts";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";

let server: RunningServer;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server?.stop();
});

/** A 1×1 PNG. */
const PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
  "base64",
);

function form(file: Blob, name: string, fields: Record<string, string> = {}): FormData {
  const data = new FormData();
  data.append("file", file, name);
  for (const [key, value] of Object.entries(fields)) data.append(key, value);
  return data;
}

async function signedIn() {
  let stored: Tokens | null = null;
  const api = createAliasClient({
    url: server.url,
    getTokens: () => stored,
    setTokens: (tokens) => void (stored = tokens),
  });
  stored = await withTimeout(
    api.auth.register.mutate({
      email: `files-${randomUUID()}@example.com`,
      password: "correct horse battery",
      name: "File Tester",
    }),
    15_000,
    "auth.register",
  );
  return { api, token: stored.accessToken };
}

describe("files.upload", () => {
  test("through createAliasClient", async () => {
    const { api } = await signedIn();
    const file = await withTimeout(
      api.files.upload.mutate(form(new Blob([PNG], { type: "image/png" }), "dot.png")),
    );
    assert.equal(file.status, "ready");
    assert.equal(file.mimeType, "image/png");
    assert.equal(file.width, 1);
    assert.ok(file.url);
    const served = await fetch(file.url);
    assert.equal(served.headers.get("x-content-type-options"), "nosniff");
    // Other calls still batch beside it.
    const [listed, again] = await Promise.all([
      api.files.list.query(),
      api.files.get.query({ id: file.id }),
    ]);
    assert.equal(listed.files[0]?.id, file.id);
    assert.equal(again.filename, "dot.png");

    await assert.rejects(
      api.files.upload.mutate(form(new Blob(["%PDF-1.4\n"], { type: "image/png" }), "x.png")),
      (error: unknown) => isAliasError(error, "file_content_mismatch"),
    );
  });

  test("through splitLink + isNonJsonSerializable, as tRPC documents", async () => {
    const { token } = await signedIn();
    const headers = { authorization: `Bearer ${token}` };
    const client = createTRPCClient<AppRouter>({
      links: [
        splitLink({
          condition: (op) => isNonJsonSerializable(op.input),
          true: httpLink({ url: server.url, headers }),
          false: httpBatchLink({ url: server.url, headers }),
        }),
      ],
    });
    const file = await withTimeout(
      client.files.upload.mutate(
        form(new Blob(["# Notes\n"], { type: "text/markdown" }), "notes.md", { purpose: "attachment" }),
      ),
    );
    assert.equal(file.mimeType, "text/markdown");
    await assert.rejects(
      client.files.upload.mutate(form(new Blob(["x"]), "x.txt", { purpose: "nonsense" })),
      (error: unknown) =>
        error instanceof TRPCClientError && error.data?.fieldErrors?.purpose !== undefined,
    );
  });
});
