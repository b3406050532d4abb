// Starts the real alias-server binary on a free port with a fresh data directory.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

const repoRoot = resolve(fileURLToPath(import.meta.url), "../../..");

export type RunningServer = {
  /** The tRPC endpoint, e.g. `http://127.0.0.1:1234/trpc`. */
  url: string;
  stop(): Promise<void>;
};

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => child.once("exit", () => done()));
}

export async function startServer(env: Record<string, string> = {}): Promise<RunningServer> {
  const bin = process.env.ALIAS_SERVER_BIN ?? join(repoRoot, "target/debug/alias-server");
  const dataDir = await mkdtemp(join(tmpdir(), "alias-server-e2e-"));
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;

  let output = "";
  const child = spawn(bin, ["serve"], {
    cwd: repoRoot,
    env: { ...process.env, ALIAS_BIND: `127.0.0.1:${port}`, ALIAS_DATA_DIR: dataDir, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout?.on("data", (chunk) => (output += chunk));
  child.stderr?.on("data", (chunk) => (output += chunk));
  const spawnError = new Promise<never>((_, reject) => child.once("error", reject));

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited(child);
    await rm(dataDir, { recursive: true, force: true });
  };

  const deadline = Date.now() + 15_000;
  while (true) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`alias-server exited with ${child.exitCode}:\n${output}`);
    }
    try {
      const response = await Promise.race([fetch(`${origin}/ready`), spawnError]);
      if (response.status === 200) break;
    } catch (error) {
      if (error instanceof Error && "code" in error && error.code === "ENOENT") {
        await stop();
        throw new Error(`alias-server binary not found at ${bin} (run \`cargo build\` first)`);
      }
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`alias-server was not ready within 15 s:\n${output}`);
    }
    await sleep(100);
  }
  return { url: `${origin}/trpc`, stop };
}

/** Rejects after `ms` so that a hung call fails the test instead of blocking it. */
export function withTimeout<T>(promise: Promise<T>, ms = 5_000, what = "operation"): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
