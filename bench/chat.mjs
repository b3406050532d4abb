// Chat streaming benchmark: a fake Gemini (node:http, in this process) streams replies through
// the release server to SSE clients (node:http, also in this process, so both ends read one
// clock). Run through bench/chat.sh, which builds the server and raises `ulimit -n`.
// A report, not a test: it exits 0 whatever the verdicts (non-zero only when it cannot run).
//
//   (a) server-added delay: the fake writes the FIRST byte of a reply body at t0
//       (performance.now() just before res.write); the client sees the first `delta` event at
//       t1; t1 - t0 over CHAT_LATENCY_STREAMS sequential streams. Target: median <= 2 ms.
//       A node-only loopback baseline (fake -> client, no server) shows this harness's share.
//   (b) CHAT_CONCURRENT_STREAMS streams at once, each a whole short reply (+ title): errors
//       (target 0), wall time, streams/s, time to first delta and to `done`, server CPU;
//       CHAT_BURSTS (2) times, with the server's VmRSS after each.
//   (c) resident memory per idle open stream: CHAT_IDLE_STREAMS streams whose provider sent
//       one word and then waits; server VmRSS before and after they are all open; released
//       afterwards (the fake finishes them) and checked to end cleanly.
//   (d) one reply that streams for CHAT_LONG_SECONDS (one word a second), run beside (c)
//       and (b): does a long reply complete? (0 turns it off.)
// They run in the order (a), (c), (b), so (c)'s "before" is not inflated by (b)'s burst.
//
// Environment: ALIAS_BIN (default target/release/alias-server), CHAT_WORDS (5) and
// CHAT_PACE_MS (20): words per reply and time between them; ALIAS_* variables are passed on
// to the server (bench/chat.sh sets ALIAS_DB_MAX_CONNECTIONS).

import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';

import {
  cpuSeconds, createSessions, errorSummary, fmt, int, listen, log, quantile, report, sleep, startServer,
  stopServer, subscribe, trpcAt, verdict, wordEvent,
} from './lib.mjs';

const LATENCY_STREAMS = int('CHAT_LATENCY_STREAMS', 200);
const CONCURRENT_STREAMS = int('CHAT_CONCURRENT_STREAMS', 1000);
const IDLE_STREAMS = int('CHAT_IDLE_STREAMS', 500);
const LONG_SECONDS = int('CHAT_LONG_SECONDS', 20);
const IDLE_WAVE = 50;
const BURSTS = Math.max(1, int('CHAT_BURSTS', 2));
const WORDS = Math.max(1, int('CHAT_WORDS', 5));
const PACE_MS = int('CHAT_PACE_MS', 20);
const LATENCY_TARGET_MS = 2;
const HARD_LIMIT_MS = int('CHAT_HARD_LIMIT_SECONDS', 170) * 1000;

// ---------------------------------------------------------------- the fake Gemini

/** Per stream id: when the fake wrote the first body byte. */
const firstByteAt = new Map();
/** Replies of mode `idle` waiting for release: functions that finish them. */
const held = [];
const providerCalls = { stream: 0, title: 0, other: 0 };

/** Writes `count` words `pace` ms apart (the first after `pace`, so headers go first). */
function streamWords(res, id, count, pace) {
  let sent = 0;
  const next = () => {
    if (res.destroyed) return;
    sent += 1;
    const last = sent === count;
    if (sent === 1) firstByteAt.set(id, performance.now());
    res.write(wordEvent(`word${sent} `, last));
    if (last) res.end();
    else setTimeout(next, pace);
  };
  setTimeout(next, pace);
}

function fakeGemini(req, res) {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    const url = req.url ?? '';
    if (url.includes(':generateContent')) {
      providerCalls.title += 1;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ candidates: [{ content: { parts: [{ text: 'Title' }] } }] }));
      return;
    }
    if (url === '/direct') return direct(res);
    if (!url.includes(':streamGenerateContent')) {
      providerCalls.other += 1;
      res.writeHead(404).end();
      return;
    }
    providerCalls.stream += 1;
    // The user's message says what to do: `bench <mode> <id>`.
    let mode = 'short';
    let id = '';
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      const user = body.contents.filter((c) => c.role === 'user').at(-1);
      const match = /bench (\w+) (\S+)/.exec(user.parts.map((p) => p.text ?? '').join(' '));
      if (match) [, mode, id] = match;
    } catch {
      // An unexpected body: answer a short reply all the same.
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.flushHeaders();
    if (mode === 'idle') {
      // One word, then nothing until released.
      setTimeout(() => {
        if (res.destroyed) return;
        res.write(wordEvent('word1 ', false));
        held.push(() => {
          if (res.destroyed) return;
          res.end(wordEvent('word2 ', true));
        });
      }, PACE_MS);
    } else if (mode === 'long') {
      streamWords(res, id, Math.max(1, LONG_SECONDS), 1000);
    } else {
      streamWords(res, id, WORDS, PACE_MS);
    }
  });
}

/** The node-only baseline: one SSE-like chunk `PACE_MS` after the headers. */
function direct(res) {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  res.flushHeaders();
  setTimeout(() => {
    firstByteAt.set('direct', performance.now());
    res.end(wordEvent('word1 ', true));
  }, PACE_MS);
}

// ---------------------------------------------------------------- the server

const readStatus = (pid, field) => {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) : NaN;
};

// ---------------------------------------------------------------- clients

let port = 0;
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });

const trpc = (procedure, input, token) => trpcAt(port, procedure, input, token);

/**
 * Opens `chat.send` and follows it to the end. Resolves (never rejects) with
 * { id, startedAt, firstDeltaAt, doneAt, deltas, status, error }.
 */
async function openStream({ token, sessionId, mode, timeoutMs, onFirstDelta }) {
  const id = randomUUID();
  const input = { sessionId, content: `bench ${mode} ${id}`, clientMessageId: randomUUID() };
  const result = { id, startedAt: performance.now(), firstDeltaAt: null, doneAt: null, endedAt: null, deltas: 0, status: null, error: null };
  const ended = await subscribe({
    agent, port, procedure: 'chat.send', input, token, timeoutMs,
    onEvent: ({ event, data }, now) => {
      if (event === 'serialized-error') result.error = `serialized-error ${data}`;
      if (event !== '') return; // connected, ping, return
      const payload = JSON.parse(data);
      if (payload.type === 'delta') {
        result.deltas += 1;
        if (result.firstDeltaAt === null) {
          result.firstDeltaAt = now;
          onFirstDelta?.(result);
        }
      } else if (payload.type === 'done') {
        result.doneAt = now;
        result.status = payload.message.status;
      }
    },
  });
  result.endedAt = performance.now();
  result.error ??= ended;
  if (!result.error && result.status !== 'complete') result.error = `ended without a complete reply (status ${result.status})`;
  return result;
}

/** The node-only baseline: GET /direct on the fake, first chunk's arrival. */
function directOnce(fakePort) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: fakePort, path: '/direct', agent }, (res) => {
      let at = null;
      res.on('data', () => {
        at ??= performance.now();
      });
      res.on('end', () => resolve(at - firstByteAt.get('direct')));
    });
    req.on('error', reject);
  });
}

// ---------------------------------------------------------------- numbers

const { lines, out, table } = report();

// ---------------------------------------------------------------- the run

async function main() {
  const started = Date.now();
  const fake = http.createServer({ noDelay: true, keepAliveTimeout: 120_000 }, fakeGemini);
  fake.headersTimeout = 0;
  fake.requestTimeout = 0;
  const fakePort = await listen(fake);
  const server = await startServer({ ALIAS_GEMINI_BASE_URL: `http://127.0.0.1:${fakePort}` });
  const pid = server.child.pid;
  port = server.port;
  log(`server pid ${pid} at http://127.0.0.1:${port}, fake Gemini at 127.0.0.1:${fakePort}, log ${server.logPath}`);
  const hardStop = setTimeout(() => {
    console.error(`>> hard time limit (${HARD_LIMIT_MS / 1000} s) reached; stopping`);
    server.child.kill('SIGKILL');
    process.exit(2);
  }, HARD_LIMIT_MS);
  hardStop.unref();

  try {
    const auth = await trpc('auth.register', { email: 'bench@example.com', password: 'correct horse battery', name: 'Bench' });
    const token = auth.accessToken;
    await trpc('apiKeys.set', { provider: 'gemini', apiKey: 'AIza-bench-key', validate: false }, token);
    const stream = (sessionId, mode, timeoutMs, onFirstDelta) => openStream({ token, sessionId, mode, timeoutMs, onFirstDelta });

    // Warm-up: connections, caches, the first SQLite pages.
    for (const sessionId of await createSessions(port, token, 10)) {
      const r = await stream(sessionId, 'short', 10_000);
      if (r.error) throw new Error(`warm-up stream failed: ${r.error}`);
    }

    // (a) server-added delay, sequential streams.
    const baseline = [];
    for (let i = 0; i < 50; i++) baseline.push(await directOnce(fakePort));
    const latencySessions = await createSessions(port, token, LATENCY_STREAMS);
    const delays = [];
    const latencyResults = [];
    log(`(a) ${LATENCY_STREAMS} sequential streams`);
    for (const sessionId of latencySessions) {
      const r = await stream(sessionId, 'short', 10_000);
      latencyResults.push(r);
      const t0 = firstByteAt.get(r.id);
      if (!r.error && r.firstDeltaAt !== null && t0 !== undefined) delays.push(r.firstDeltaAt - t0);
      firstByteAt.delete(r.id);
    }

    const rssStart = readStatus(pid, 'VmRSS');

    // (d) starts now and runs beside (c) and (b).
    const longRun = LONG_SECONDS > 0
      ? createSessions(port, token, 1).then(([sessionId]) => stream(sessionId, 'long', (LONG_SECONDS + 30) * 1000))
      : null;

    // (c) idle open streams.
    const idleSessions = await createSessions(port, token, IDLE_STREAMS);
    await sleep(1000);
    const rssBefore = readStatus(pid, 'VmRSS');
    log(`(c) ${IDLE_STREAMS} idle streams (server VmRSS ${rssBefore} kB before)`);
    // Opened in waves of IDLE_WAVE (a burst of 500 sends is (b)'s job), all within a few
    // seconds: a stream whose provider call passes 15 s fails, see (d).
    const openIds = new Set();
    let openedEver = 0;
    const idlePromises = [];
    const idleStart = performance.now();
    for (let i = 0; i < idleSessions.length; i += IDLE_WAVE) {
      const wave = idleSessions.slice(i, i + IDLE_WAVE).map((sessionId) => {
        let opened;
        const openedOrFailed = new Promise((resolve) => { opened = resolve; });
        idlePromises.push(
          stream(sessionId, 'idle', 60_000, (r) => {
            openIds.add(r.id);
            openedEver += 1;
            opened();
          }).then((r) => {
            openIds.delete(r.id);
            opened();
            return r;
          }),
        );
        return openedOrFailed;
      });
      await Promise.race([Promise.all(wave), sleep(10_000)]);
    }
    const idle = Promise.all(idlePromises);
    const openedInTime = openedEver === IDLE_STREAMS;
    const openMs = performance.now() - idleStart;
    await sleep(1000); // let the open streams settle into idleness
    const rssOpen = readStatus(pid, 'VmRSS');
    const fdsOpen = fs.readdirSync(`/proc/${pid}/fd`).length;
    const threads = Number(/^Threads:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
    const open = openIds.size;
    log(`(c) ${open} open after ${fmt(openMs, 0)} ms; VmRSS ${rssOpen} kB; releasing`);
    const releaseStart = performance.now();
    for (const release of held.splice(0)) release();
    const idleResults = await idle;
    const releaseMs = performance.now() - releaseStart;
    await sleep(1000);
    const rssReleased = readStatus(pid, 'VmRSS');

    // (b) concurrent streams.
    const bursts = [];
    for (let round = 1; round <= BURSTS; round++) {
      const burstSessions = await createSessions(port, token, CONCURRENT_STREAMS);
      await sleep(500);
      log(`(b) ${CONCURRENT_STREAMS} concurrent streams, burst ${round}/${BURSTS}`);
      const cpuBefore = cpuSeconds(pid);
      const burstStart = performance.now();
      const results = await Promise.all(burstSessions.map((sessionId) => stream(sessionId, 'short', 60_000)));
      const ms = performance.now() - burstStart;
      const cpu = cpuSeconds(pid) - cpuBefore;
      await sleep(500);
      bursts.push({ results, ms, cpu, ok: results.filter((r) => !r.error), rss: readStatus(pid, 'VmRSS') });
    }

    const long = longRun ? await longRun : null;

    // ------------------------------------------------------------ report
    const doneMs = (r) => r.doneAt - r.startedAt;
    const firstMs = (r) => r.firstDeltaAt - r.startedAt;
    out(`== chat streaming | fake Gemini: ${WORDS} words ${PACE_MS} ms apart, title via generateContent | server pid ${pid} ==`);
    out();
    out(`(a) server-added delay: fake writes first body byte -> client reads first delta (${delays.length}/${LATENCY_STREAMS} streams, sequential)`);
    table(
      ['path', 'samples', 'median ms', 'p90 ms', 'p99 ms', 'max ms'],
      [
        ['through server', delays.length, fmt(quantile(delays, 0.5)), fmt(quantile(delays, 0.9)), fmt(quantile(delays, 0.99)), fmt(Math.max(...delays))],
        ['node only (baseline)', baseline.length, fmt(quantile(baseline, 0.5)), fmt(quantile(baseline, 0.9)), fmt(quantile(baseline, 0.99)), fmt(Math.max(...baseline))],
      ],
    );
    const latencyErrors = latencyResults.filter((r) => r.error).length;
    const median = quantile(delays, 0.5);
    out(`median ${fmt(median)} ms  =>  ${verdict(median <= LATENCY_TARGET_MS && latencyErrors === 0)} (target: median <= ${LATENCY_TARGET_MS} ms; ${latencyErrors} stream errors)`);
    out(`stream open -> first delta: median ${fmt(quantile(latencyResults.filter((r) => !r.error).map(firstMs), 0.5), 1)} ms (includes the fake's ${PACE_MS} ms pause); open -> done: median ${fmt(quantile(latencyResults.filter((r) => !r.error).map(doneMs), 0.5), 1)} ms`);
    out();
    out(`(b) ${CONCURRENT_STREAMS} concurrent streams, each a whole reply (${BURSTS} bursts)`);
    table(
      ['burst', 'streams', 'errors', 'wall s', 'streams/s', 'first delta p50/p99 ms', 'done p50/p99 ms', 'server cpu ms/stream', 'VmRSS after kB'],
      bursts.map((b, i) => [
        i + 1,
        CONCURRENT_STREAMS,
        b.results.length - b.ok.length,
        fmt(b.ms / 1000, 2),
        fmt((CONCURRENT_STREAMS * 1000) / b.ms, 1),
        `${fmt(quantile(b.ok.map(firstMs), 0.5), 0)} / ${fmt(quantile(b.ok.map(firstMs), 0.99), 0)}`,
        `${fmt(quantile(b.ok.map(doneMs), 0.5), 0)} / ${fmt(quantile(b.ok.map(doneMs), 0.99), 0)}`,
        fmt((b.cpu * 1000) / CONCURRENT_STREAMS, 2),
        b.rss,
      ]),
    );
    for (const line of errorSummary(bursts.flatMap((b) => b.results))) out(line);
    const burstErrors = bursts.reduce((n, b) => n + b.results.length - b.ok.length, 0);
    out(`errors ${burstErrors}  =>  ${verdict(burstErrors === 0)} (target: 0 errors in every burst)`);
    out(`server VmRSS ${rssStart} kB after (a); finished replies stay in memory for 10 minutes (chat/generation.rs RETENTION)`);
    out();
    const perStream = (rssOpen - rssBefore) / open;
    out(`(c) resident memory per idle open stream (provider sent one word, then waits)`);
    table(
      ['streams open', 'VmRSS before kB', 'VmRSS open kB', 'KiB/stream', 'after release kB', 'fds open', 'threads', 'stream errors'],
      [[`${open}/${IDLE_STREAMS}`, rssBefore, rssOpen, fmt(perStream, 1), rssReleased, fdsOpen, threads, idleResults.filter((r) => r.error).length]],
    );
    for (const line of errorSummary(idleResults)) out(line);
    out(`opened in waves of ${IDLE_WAVE} in ${fmt(openMs, 0)} ms; ${openedInTime ? 'all opened' : `${IDLE_STREAMS - openedEver} failed before their first word`}; ${open} open and idle when measured; released, all ended ${fmt(releaseMs, 0)} ms later`);
    out(`${fmt(perStream, 1)} KiB per idle stream (server side: client connection, subscription, reply task, provider connection); informational`);
    if (long) {
      out();
      const ok = !long.error;
      out(`(d) one reply streaming for ${LONG_SECONDS} s (a word a second): ${long.deltas} deltas, ${ok ? 'complete' : `error: ${long.error}`}`);
      out(`    ended ${fmt(long.endedAt - long.startedAt, 0)} ms after it was sent  =>  ${verdict(ok && long.deltas === LONG_SECONDS)} (target: completes with all ${LONG_SECONDS} words)`);
    }
    out();
    out(`provider calls: ${providerCalls.stream} streamGenerateContent, ${providerCalls.title} generateContent (titles); wall time ${fmt((Date.now() - started) / 1000, 1)} s; load average now ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
    const logText = fs.readFileSync(server.logPath, 'utf8');
    const problems = logText.split('\n').filter((line) => /\b(WARN|ERROR)\b/.test(line));
    out(`server log: ${problems.length} WARN/ERROR lines${problems.length ? ':' : ''}`);
    const seen = new Map();
    for (const line of problems) {
      const key = line.replace(/^\S+\s+/, '').replace(/duration_us=\d+/, 'duration_us=N').slice(0, 200);
      seen.set(key, (seen.get(key) ?? 0) + 1);
    }
    for (const [line, n] of [...seen].slice(0, 8)) out(`    ${n} x ${line}`);
  } finally {
    await stopServer(server, Boolean(process.env.CHAT_KEEP_DATA));
    fake.closeAllConnections?.();
    fake.close();
    agent.destroy();
    console.log(lines.join('\n'));
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error('>> chat benchmark could not run:', error);
    process.exit(1);
  },
);
