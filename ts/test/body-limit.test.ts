// An over-limit body is answered with a clean 413 that the client reads, every time (the
// server used to answer before the client finished sending and close: EPIPE instead).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createTRPCClient, httpLink, TRPCClientError } from "@trpc/client";
import type { AppRouter } from "../../bindings/index.ts";
import { startServer, withTimeout, type RunningServer } from "./helpers.ts";

let server: RunningServer;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server?.stop();
});

const loginOf = (megabytes: number) =>
  JSON.stringify({ email: "a@example.com", password: "x".repeat(megabytes * 1024 * 1024) });
const twoMegabytes = loginOf(2);

test("fetch sending 2 MB many times (and 8 MB, past socket buffers) always reads a 413", { timeout: 60_000 }, async () => {
  const bodies = [...Array<string>(30).fill(twoMegabytes), ...Array<string>(5).fill(loginOf(8))];
  for (const [attempt, payload] of bodies.entries()) {
    const response = await withTimeout(
      fetch(`${server.url}/auth.login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: payload,
      }),
      10_000,
      `attempt ${attempt}`,
    );
    assert.equal(response.status, 413, `attempt ${attempt}`);
    const body = (await response.json()) as { error?: { data?: { code?: string } } };
    assert.equal(body.error?.data?.code, "PAYLOAD_TOO_LARGE", `attempt ${attempt}`);
  }
});

test("the tRPC client gets a typed PAYLOAD_TOO_LARGE", async () => {
  const client = createTRPCClient<AppRouter>({ links: [httpLink({ url: server.url })] });
  const error = await withTimeout(
    client.auth.login.mutate(JSON.parse(twoMegabytes) as { email: string; password: string }),
  ).then(
    () => assert.fail("a 2 MB login was accepted"),
    (error: unknown) => error,
  );
  assert.ok(error instanceof TRPCClientError);
  assert.equal(error.data?.code, "PAYLOAD_TOO_LARGE");
  assert.equal(error.data?.httpStatus, 413);
});
