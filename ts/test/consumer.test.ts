// The package as an app gets it: `npm pack`, then ts/consumer (an app with its own @trpc/client
// and @trpc/server, of another version than ours, TypeScript 5.9 and Expo's strict tsconfig)
// installs the tarball, type-checks against it and calls the real server through it.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { cp, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { startServer, type RunningServer } from "./helpers.ts";

const repoRoot = resolve(fileURLToPath(import.meta.url), "../../..");
const fixture = join(repoRoot, "ts/consumer");

/** Installing can download packages on a fresh machine. */
const INSTALL_MS = 240_000;

type Run = { code: number; stdout: string; stderr: string };

/** Runs a command; never rejects (the exit code is in the result). */
function run(command: string, args: string[], cwd: string, timeout = INSTALL_MS): Promise<Run> {
  // The `npm test` that runs us sets npm_* variables (prefix, scripts' config) that must not
  // leak into the app's own npm.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.toLowerCase().startsWith("npm_")),
  );
  return new Promise((done) => {
    execFile(command, args, { cwd, env, timeout, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1;
      done({ code, stdout, stderr });
    });
  });
}

function ok(result: Run, what: string): Run {
  assert.equal(result.code, 0, `${what} failed:\n${result.stdout}\n${result.stderr}`);
  return result;
}

const exists = (path: string) => stat(path).then(() => true, () => false);

type PackedFile = { path: string };
type Packed = { filename: string; files: PackedFile[] };

let app: string;
let packed: Packed;
let server: RunningServer | undefined;

before(async () => {
  app = await mkdtemp(join(tmpdir(), "alias-consumer-"));
  await cp(fixture, app, { recursive: true, filter: (path) => !path.includes("node_modules") });
  // `npm pack` runs `prepare`, which builds dist/ from the sources.
  const pack = ok(await run("npm", ["pack", "--json", "--pack-destination", app], repoRoot), "npm pack");
  const [summary] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf("["))) as Packed[];
  assert.ok(summary, `npm pack printed no summary: ${pack.stdout}`);
  packed = summary;
  const flags = ["--no-audit", "--no-fund", "--prefer-offline"];
  ok(await run("npm", ["ci", ...flags], app), "npm ci (the app's own dependencies)");
  ok(await run("npm", ["install", "--no-save", ...flags, `./${packed.filename}`], app), "npm install <tarball>");
}, { timeout: INSTALL_MS * 2 });

after(async () => {
  await server?.stop();
  if (app !== undefined) await rm(app, { recursive: true, force: true });
});

test("the tarball holds the built client and bindings with their declarations, nothing else", () => {
  const paths = packed.files.map((file) => file.path).sort();
  const expected = ["README.md", "package.json"];
  for (const module of ["bindings/index", "ts/auth-link", "ts/client", "ts/errors", "ts/fetch", "ts/subscriptions"]) {
    expected.push(`dist/${module}.d.ts`, `dist/${module}.js`);
  }
  assert.deepEqual(paths, expected.sort());
});

test("tRPC is the app's own: declared as peers, never installed inside the package", async () => {
  const installed = join(app, "node_modules/alias-server");
  const manifest = JSON.parse(await readFile(join(installed, "package.json"), "utf8")) as {
    dependencies?: object;
    peerDependencies?: Record<string, string>;
  };
  assert.equal(manifest.dependencies, undefined);
  assert.ok(manifest.peerDependencies?.["@trpc/client"]);
  assert.ok(manifest.peerDependencies?.["@trpc/server"]);
  assert.equal(await exists(join(installed, "node_modules")), false, "no nested node_modules");
  const appTrpc = JSON.parse(await readFile(join(app, "node_modules/@trpc/client/package.json"), "utf8"));
  const ownTrpc = JSON.parse(await readFile(join(repoRoot, "node_modules/@trpc/client/package.json"), "utf8"));
  assert.notEqual(appTrpc.version, ownTrpc.version, "the fixture checks another tRPC version than ours");
});

/** The diagnostics `mistakes.ts` announces: `// TSnnnn` at the end of a line. */
async function announcedMistakes(): Promise<string[]> {
  const source = await readFile(join(app, "mistakes.ts"), "utf8");
  return source.split("\n").flatMap((line, index) => {
    const match = /\/\/ (TS\d+)$/.exec(line);
    return match ? [`mistakes.ts:${index + 1} ${match[1]}`] : [];
  });
}

test(
  "type-checks under Expo's strict settings with real output types; each deliberate mistake is an error",
  { timeout: 120_000 },
  async () => {
    // One run over the app (src/, whose @ts-expect-error lines must all be needed) and
    // mistakes.ts: the only errors must be the announced ones.
    const tsc = join(app, "node_modules/.bin/tsc");
    const result = await run(tsc, ["-p", "tsconfig.mistakes.json", "--pretty", "false"], app);
    const reported = [...result.stdout.matchAll(/^(\S+)\((\d+),\d+\): error (TS\d+)/gm)].map(
      ([, file, line, code]) => `${file}:${line} ${code}`,
    );
    const expected = await announcedMistakes();
    assert.ok(expected.length >= 5, "mistakes.ts announces its mistakes");
    assert.deepEqual(reported.sort(), expected.sort(), `tsc said:\n${result.stdout}${result.stderr}`);
    assert.notEqual(result.code, 0);
  },
);

test("the installed package runs on the app's own tRPC against the real server", { timeout: 60_000 }, async () => {
  server = await startServer();
  const script = `
    import { createAliasClient, isAliasError } from "alias-server";
    const api = createAliasClient({ url: process.argv[1], getTokens: () => null, setTokens: () => {} });
    const health = await api.system.health.query();
    const refused = await api.users.me.query().catch((error) => error);
    console.log(JSON.stringify({ health, reason: isAliasError(refused) ? refused.data?.reason : null }));
  `;
  const result = ok(
    await run(process.execPath, ["--input-type=module", "-e", script, server.url], app, 30_000),
    "node",
  );
  const { health, reason } = JSON.parse(result.stdout) as { health: { status: string }; reason: string };
  assert.equal(health.status, "ok");
  assert.equal(reason, "missing_token");
});
