// Shared by the Node benchmarks (bench/chat.mjs, bench/instances.mjs): the release server as a
// child process, Gemini's streamed event format, and the numbers and tables they print.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export const env = (name, fallback) => {
  const value = process.env[name];
  return value === undefined || value === '' ? fallback : value;
};
export const int = (name, fallback) => Number.parseInt(env(name, String(fallback)), 10);
export const log = (...args) => console.error('>>', ...args);
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The release binary: ALIAS_BIN (bench/lib.sh sets it), else target/release. */
export const BIN = path.resolve(env('ALIAS_BIN', path.join(here, '..', 'target', 'release', 'alias-server')));

/** One Gemini `streamGenerateContent?alt=sse` event carrying `text` (the last one says STOP). */
export const wordEvent = (text, last) =>
  `data: ${JSON.stringify({
    candidates: [{ content: { role: 'model', parts: [{ text }] }, ...(last ? { finishReason: 'STOP' } : {}) }],
  })}\r\n\r\n`;

export function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

/**
 * Starts the server on a free port with a fresh data directory, the caller's environment and
 * `extra` on top; resolves once it logs its address: { child, port, dataDir, logPath, exited }.
 */
export async function startServer(extra, label = 'server') {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `alias-bench-${label}-`));
  const logPath = path.join(dataDir, 'server.log');
  const logFile = fs.openSync(logPath, 'w');
  const child = spawn(BIN, [], {
    env: {
      ...process.env,
      DATABASE_URL: '',
      ALIAS_BIND: '127.0.0.1:0',
      ALIAS_DATA_DIR: dataDir,
      ALIAS_ACCESS_TTL_SECONDS: env('ALIAS_ACCESS_TTL_SECONDS', '3600'),
      ALIAS_SHUTDOWN_GRACE_SECONDS: env('ALIAS_SHUTDOWN_GRACE_SECONDS', '2'),
      ...extra,
    },
    stdio: ['ignore', logFile, logFile],
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const text = fs.readFileSync(logPath, 'utf8');
    const match = /listening address=127\.0\.0\.1:(\d+)/.exec(text);
    if (match) {
      return { child, port: Number(match[1]), dataDir, logPath, exited };
    }
    if (child.exitCode !== null) break;
    await sleep(50);
  }
  console.error(fs.readFileSync(logPath, 'utf8'));
  throw new Error(`${label} did not start`);
}

/** Stops a server from `startServer` (SIGTERM, SIGKILL after 5 s) and removes its data. */
export async function stopServer(server, keep = false) {
  server.child.kill('SIGTERM');
  await Promise.race([server.exited, sleep(5000)]);
  if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
  if (keep) log(`kept ${server.dataDir}`);
  else fs.rmSync(server.dataDir, { recursive: true, force: true });
}

/** A tRPC mutation on the server at `port`: its `result.data`, or an error naming the status. */
export async function trpcAt(port, procedure, input, token) {
  const response = await fetch(`http://127.0.0.1:${port}/trpc/${procedure}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(input),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(`${procedure}: HTTP ${response.status} ${JSON.stringify(body).slice(0, 200)}`);
  return body.result.data;
}

/** `count` new chat sessions on the server at `port`, `parallel` creations at a time. */
export async function createSessions(port, token, count, parallel = 16) {
  const ids = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(parallel, count) }, async () => {
      while (next < count) {
        next += 1;
        ids.push((await trpcAt(port, 'chat.sessions.create', {}, token)).id);
      }
    }),
  );
  return ids;
}

/** Server CPU seconds so far (utime + stime). */
export const cpuSeconds = (pid) => {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
};

export const quantile = (values, q) => {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
};
export const fmt = (value, digits = 3) => (Number.isFinite(value) ? value.toFixed(digits) : '-');
export const verdict = (ok) => (ok ? 'PASS' : 'FAIL');

/** Lines printed at the end: `out(line)`, `table(header, rows)`, `lines`. */
export function report() {
  const lines = [];
  const out = (line = '') => lines.push(line);
  const table = (header, rows) => {
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
    const render = (row) => row.map((cell, i) => (i === 0 ? String(cell).padEnd(widths[i]) : String(cell).padStart(widths[i]))).join('  ');
    out(render(header));
    for (const row of rows) out(render(row));
  };
  return { lines, out, table };
}

/** The distinct errors of `results` (each with an `error` or none), counted. */
export function errorSummary(results) {
  const counts = new Map();
  for (const r of results) if (r.error) counts.set(r.error.slice(0, 120), (counts.get(r.error.slice(0, 120)) ?? 0) + 1);
  return [...counts].map(([error, n]) => `    ${n} x ${error}`);
}

/**
 * GETs the tRPC subscription `procedure(input)` on `port` and reads it to its end, calling
 * `onEvent({ event, data, id }, now)` per event. Resolves (never rejects) with what ended it
 * early, or null: an HTTP status, a broken connection, no end within `timeoutMs`.
 */
export function subscribe({ agent, port, procedure, input, token, timeoutMs, onEvent }) {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (error = null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(error);
    };
    const req = http.get(
      {
        host: '127.0.0.1',
        port,
        path: `/trpc/${procedure}?input=${encodeURIComponent(JSON.stringify(input))}`,
        agent,
        headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
      },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          finish(`HTTP ${res.statusCode}`);
          return;
        }
        res.setEncoding('utf8');
        res.on('data', sseParser(onEvent));
        res.on('end', () => finish());
        res.on('error', (error) => finish(`response: ${error.message}`));
        res.on('close', () => finish('connection closed mid-stream'));
      },
    );
    req.on('error', (error) => finish(`request: ${error.message}`));
    const timer = setTimeout(() => {
      finish(`no end within ${timeoutMs} ms`);
      req.destroy();
    }, timeoutMs);
  });
}

/** Parses a `text/event-stream` body chunk by chunk, calling `onEvent({ event, data, id }, now)`. */
export function sseParser(onEvent) {
  let buffer = '';
  return (chunk) => {
    const now = performance.now();
    buffer += chunk;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = '';
      let data = '';
      let id = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data += line.slice(6);
        else if (line.startsWith('id: ')) id = line.slice(4);
      }
      onEvent({ event, data, id }, now);
    }
  };
}
