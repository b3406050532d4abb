// Chat replies across two instances (PostgreSQL + Redis): a fake Gemini (node:http, in this
// process) streams replies through two release servers A and B to SSE clients (also in this
// process, so every time is read on one clock). Run through bench/instances-chat.sh, which
// builds the server, makes a fresh database and raises `ulimit -n`. A report, not a test.
//
//   (a) delay through the other instance: A writes each reply; one client follows it on A,
//       another on B (through Redis) at the same time. Per word: the fake writes it at t0
//       (performance.now() just before res.write), each client reads its `delta` at t1;
//       t1 - t0 for RESUME_REPLIES replies of RESUME_WORDS words. Target: B's median within
//       5 ms of A's.
//   (b) STREAMS replies at once over both instances: sent alternately through A and B
//       (`chat.send`), each followed (`chat.follow`) through A or B so that half are followed
//       on the instance writing them and half through the other; errors (target 0), wall
//       time, time to the first delta and to `done`, each instance's CPU.
//
// Environment: DATABASE_URL (an empty PostgreSQL database), ALIAS_REDIS_URL, ALIAS_BIN;
// RESUME_REPLIES (10), RESUME_WORDS (30), STREAMS (1000), WORDS (5), PACE_MS (20).

import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

import {
  cpuSeconds, createSessions, env, errorSummary, fmt, int, listen, log, quantile, report, sleep, startServer,
  stopServer, subscribe, trpcAt, verdict, wordEvent,
} from './lib.mjs';

const RESUME_REPLIES = int('RESUME_REPLIES', 10);
const RESUME_WORDS = int('RESUME_WORDS', 30);
const STREAMS = int('STREAMS', 1000);
const WORDS = Math.max(1, int('WORDS', 5));
const PACE_MS = int('PACE_MS', 20);
/** Before a measured reply's first word, so both followers are attached when it comes. */
const THINK_MS = 300;
const TARGET_MS = 5;
const HARD_LIMIT_MS = int('HARD_LIMIT_SECONDS', 240) * 1000;

// ---------------------------------------------------------------- the fake Gemini

/** Per reply id: when the fake wrote each word (index = word number - 1). */
const wordTimes = new Map();
const providerCalls = { stream: 0, title: 0 };

/** The user's message says what to stream: `bench <words> <pause ms> <id>`. */
function fakeGemini(req, res) {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    if ((req.url ?? '').includes(':generateContent')) {
      providerCalls.title += 1;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ candidates: [{ content: { parts: [{ text: 'Title' }] } }] }));
      return;
    }
    providerCalls.stream += 1;
    let [words, first, id] = [WORDS, PACE_MS, ''];
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      const user = body.contents.filter((c) => c.role === 'user').at(-1);
      const match = /bench (\d+) (\d+) (\S+)/.exec(user.parts.map((p) => p.text ?? '').join(' '));
      if (match) [words, first, id] = [Number(match[1]), Number(match[2]), match[3]];
    } catch {
      // An unexpected body: the default reply all the same.
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.flushHeaders();
    const times = [];
    wordTimes.set(id, times);
    let sent = 0;
    const next = () => {
      if (res.destroyed) return;
      sent += 1;
      const last = sent === words;
      times.push(performance.now());
      res.write(wordEvent(`w${sent} `, last));
      if (last) res.end();
      else setTimeout(next, PACE_MS);
    };
    setTimeout(next, first);
  });
}

// ---------------------------------------------------------------- clients

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });

/**
 * Follows a reply with `chat.follow` on `port` to its end. Resolves (never rejects) with
 * { connectedAt, deltaAt: Map<word number, time>, firstDeltaAt, doneAt, status, error }.
 */
async function follow(port, token, messageId, timeoutMs) {
  const result = { connectedAt: null, deltaAt: new Map(), firstDeltaAt: null, doneAt: null, status: null, error: null };
  const ended = await subscribe({
    agent, port, procedure: 'chat.follow', input: { messageId }, token, timeoutMs,
    onEvent: ({ event, data }, now) => {
      if (event === 'connected') result.connectedAt = now;
      if (event === 'serialized-error') result.error = `serialized-error ${data}`;
      if (event !== '') return;
      const payload = JSON.parse(data);
      if (payload.type === 'delta') {
        result.firstDeltaAt ??= now;
        for (const [, n] of payload.text.matchAll(/w(\d+) /g)) result.deltaAt.set(Number(n), now);
      } else if (payload.type === 'done') {
        result.doneAt = now;
        result.status = payload.message.status;
      }
    },
  });
  result.error ??= ended;
  if (!result.error && result.status !== 'complete') result.error = `ended without a complete reply (status ${result.status})`;
  return result;
}

/** Sends `content` through `port`: the reply's id. */
async function send(port, token, sessionId, content) {
  const sent = await trpcAt(port, 'chat.send', { sessionId, content, clientMessageId: randomUUID() }, token);
  return sent.replyMessageId;
}

// ---------------------------------------------------------------- the run

async function main() {
  const started = Date.now();
  const fake = http.createServer({ noDelay: true, keepAliveTimeout: 120_000 }, fakeGemini);
  fake.headersTimeout = 0;
  fake.requestTimeout = 0;
  const fakePort = await listen(fake);
  // What instances behind one address share: the database, Redis, and their secrets.
  const shared = {
    DATABASE_URL: env('DATABASE_URL', ''),
    ALIAS_REDIS_URL: env('ALIAS_REDIS_URL', 'redis://127.0.0.1:6379'),
    ALIAS_REDIS_KEY_PREFIX: `bench-${randomUUID()}:`,
    ALIAS_MASTER_KEY: randomBytes(32).toString('base64'),
    ALIAS_STORAGE_URL_KEY: randomBytes(32).toString('base64'),
    ALIAS_GEMINI_BASE_URL: `http://127.0.0.1:${fakePort}`,
  };
  const a = await startServer(shared, 'a');
  const b = await startServer({ ...shared, ALIAS_JWT_PRIVATE_KEY_FILE: path.join(a.dataDir, 'jwt-ed25519.pem') }, 'b');
  log(`A pid ${a.child.pid} port ${a.port}, B pid ${b.child.pid} port ${b.port}, fake Gemini port ${fakePort}`);
  const hardStop = setTimeout(() => {
    console.error(`>> hard time limit (${HARD_LIMIT_MS / 1000} s) reached; stopping`);
    a.child.kill('SIGKILL');
    b.child.kill('SIGKILL');
    process.exit(2);
  }, HARD_LIMIT_MS);
  hardStop.unref();
  const { lines, out, table } = report();

  try {
    const { accessToken: token } = await trpcAt(a.port, 'auth.register', { email: 'bench@example.com', password: 'correct horse battery', name: 'Bench' });
    await trpcAt(a.port, 'apiKeys.set', { provider: 'gemini', apiKey: 'AIza-bench-key', validate: false }, token);
    await sleep(1000); // both subscribed to the instances' channels

    // Warm-up: connections, caches, both ways.
    for (const [writer, reader] of [[a, b], [b, a], [a, a], [b, b]]) {
      const [sessionId] = await createSessions(writer.port, token, 1);
      const reply = await send(writer.port, token, sessionId, `bench 3 ${PACE_MS} warm-${randomUUID()}`);
      const r = await follow(reader.port, token, reply, 10_000);
      if (r.error) throw new Error(`warm-up stream failed: ${r.error}`);
    }

    // (a) one client on A, one on B, both following the replies A writes.
    log(`(a) ${RESUME_REPLIES} replies of ${RESUME_WORDS} words followed on A and on B`);
    const delays = { a: [], b: [] };
    const resumeErrors = [];
    for (const sessionId of await createSessions(a.port, token, RESUME_REPLIES)) {
      const id = randomUUID();
      const reply = await send(a.port, token, sessionId, `bench ${RESUME_WORDS} ${THINK_MS} ${id}`);
      const [onA, onB] = await Promise.all([follow(a.port, token, reply, 30_000), follow(b.port, token, reply, 30_000)]);
      const times = wordTimes.get(id) ?? [];
      for (const [name, r] of [['a', onA], ['b', onB]]) {
        if (r.error) resumeErrors.push(r);
        times.forEach((t0, i) => {
          const t1 = r.deltaAt.get(i + 1);
          // Only words written after the follower was attached: earlier ones are replayed.
          if (t1 !== undefined && r.connectedAt !== null && t0 > r.connectedAt) delays[name].push(t1 - t0);
        });
      }
      wordTimes.delete(id);
    }

    // (b) STREAMS at once over both instances.
    log(`(b) ${STREAMS} streams at once over A and B`);
    const writers = Array.from({ length: STREAMS }, (_, i) => (i % 2 === 0 ? a : b));
    const sessions = { a: await createSessions(a.port, token, Math.ceil(STREAMS / 2)), b: await createSessions(b.port, token, Math.floor(STREAMS / 2)) };
    await sleep(500);
    const cpu = { a: cpuSeconds(a.child.pid), b: cpuSeconds(b.child.pid) };
    const burstStart = performance.now();
    const results = await Promise.all(
      writers.map(async (writer, i) => {
        // i % 4: 0 A->A, 1 B->B, 2 A->B, 3 B->A (written by -> followed on).
        const reader = i % 4 < 2 ? writer : writer === a ? b : a;
        const startedAt = performance.now();
        const sessionId = (writer === a ? sessions.a : sessions.b).pop();
        try {
          const reply = await send(writer.port, token, sessionId, `bench ${WORDS} ${PACE_MS} ${randomUUID()}`);
          const r = await follow(reader.port, token, reply, 60_000);
          return { ...r, startedAt, crossed: reader !== writer };
        } catch (error) {
          return { error: String(error.message ?? error), startedAt, crossed: reader !== writer };
        }
      }),
    );
    const burstMs = performance.now() - burstStart;
    cpu.a = cpuSeconds(a.child.pid) - cpu.a;
    cpu.b = cpuSeconds(b.child.pid) - cpu.b;

    // ------------------------------------------------------------ report
    out(`== chat across two instances (PostgreSQL + Redis) | fake Gemini, ${os.cpus().length} cores ==`);
    out();
    out(`(a) provider writes a word -> client reads its delta: ${RESUME_REPLIES} replies x ${RESUME_WORDS} words written by A, ${PACE_MS} ms apart, followed at once on A and on B`);
    const row = (name, values) => [name, values.length, fmt(quantile(values, 0.5)), fmt(quantile(values, 0.95)), fmt(quantile(values, 0.99)), fmt(Math.max(...values))];
    table(['client on', 'events', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms'], [row('A (writes it)', delays.a), row('B (via Redis)', delays.b)]);
    for (const line of errorSummary(resumeErrors)) out(line);
    const extra = quantile(delays.b, 0.5) - quantile(delays.a, 0.5);
    const extra95 = quantile(delays.b, 0.95) - quantile(delays.a, 0.95);
    out(`B - A: p50 ${fmt(extra)} ms, p95 ${fmt(extra95)} ms  =>  ${verdict(extra <= TARGET_MS && resumeErrors.length === 0)} (target: B's median within ${TARGET_MS} ms of A's; ${resumeErrors.length} stream errors)`);
    out();
    const ok = results.filter((r) => !r.error);
    const ms = (rs, pick) => rs.map(pick).filter(Number.isFinite);
    const first = (r) => r.firstDeltaAt - r.startedAt;
    const done = (r) => r.doneAt - r.startedAt;
    out(`(b) ${STREAMS} replies at once (${WORDS} words ${PACE_MS} ms apart), sent alternately through A and B, half followed through the other instance`);
    const burstRow = (name, rs, all) => [
      name, all.length, all.length - rs.length,
      `${fmt(quantile(ms(rs, first), 0.5), 0)} / ${fmt(quantile(ms(rs, first), 0.99), 0)}`,
      `${fmt(quantile(ms(rs, done), 0.5), 0)} / ${fmt(quantile(ms(rs, done), 0.99), 0)}`,
    ];
    table(
      ['followed on', 'streams', 'errors', 'send -> first delta p50/p99 ms', 'send -> done p50/p99 ms'],
      [
        burstRow('writing instance', ok.filter((r) => !r.crossed), results.filter((r) => !r.crossed)),
        burstRow('other instance', ok.filter((r) => r.crossed), results.filter((r) => r.crossed)),
        burstRow('all', ok, results),
      ],
    );
    for (const line of errorSummary(results)) out(line);
    const errors = results.length - ok.length;
    out(`wall ${fmt(burstMs / 1000, 2)} s, ${fmt((STREAMS * 1000) / burstMs, 1)} streams/s; server CPU A ${fmt(cpu.a, 2)} s, B ${fmt(cpu.b, 2)} s`);
    out(`errors ${errors}  =>  ${verdict(errors === 0)} (target: 0)`);
    out();
    out(`provider calls: ${providerCalls.stream} streamed, ${providerCalls.title} titles; wall time ${fmt((Date.now() - started) / 1000, 1)} s; load average now ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  } finally {
    await Promise.all([stopServer(a), stopServer(b)]);
    fake.closeAllConnections?.();
    fake.close();
    agent.destroy();
    console.log(lines.join('\n'));
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error('>> benchmark could not run:', error);
    process.exit(1);
  },
);
