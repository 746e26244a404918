#!/usr/bin/env node
// fanout_load.mjs - the fan-out load generator (DESIGN §14: worker emit ->
// client receive p99 <= 5 ms at 20 000 events/s), one process for both
// servers so their figures compare:
//
//   --target baseline   bench/ws_baseline.mjs: C clients per session connect
//                       to URL/sub?topic=<session>, and this process
//                       publishes the events itself through URL/pub.
//   --target corral     corral-gateway: C clients per session connect to URL
//                       (ws://.../acp) with `Authorization: Bearer KEY`, call
//                       `initialize`, then `_corral/session/attach
//                       {sessionId, afterSeq: 0}` (or `session/load`,
//                       --attach load).  The events come from a synthetic
//                       worker inside the real corral-session -> corral-store
//                       -> gateway path: the command after `--` (normally
//                       corral-fanout-emit, bench/fanout_emit.c), which this
//                       process starts with --sessions/--rate/--duration/
//                       --warmup/--bytes added, reads the session ids from,
//                       and tells `go` once every client is attached.
//
// Every event's text starts `t=<µs since the Unix epoch> n=<k> `, written by
// whoever emits it just before sending.  A client takes its receive time
// from performance.timeOrigin + performance.now(), calibrated against
// Date.now() at start (spin until the millisecond ticks: ~1 µs) so it is on
// the same clock as the C emitter's CLOCK_REALTIME; the calibration is
// repeated at the end and the drift printed.  In baseline mode emitter and
// receiver are this process, so that clock question does not arise.
//
// Per frame, no JSON.parse: the receive handler finds `"t=` and `"seq":` in
// the raw bytes and reads the digits (Buffer.indexOf is native).  Latency
// counts frames of events emitted in the measured window [warmup, warmup +
// duration); delivered frames/s counts frames arriving in that window.
// `_meta.seq` is checked per client: a jump is a gap, a repeat a duplicate.
//
// Output: one Markdown table row on stdout (--header prints the header
// first; --format json prints one JSON object instead), details on stderr.
// Exit status 0 when no frame was lost, no gap and no duplicate was seen.
//
// Usage:
//   node bench/fanout_load.mjs --target baseline --url ws://127.0.0.1:8091 \
//        --sessions 100 --clients 10 --rate 20000 --duration 10
//   node bench/fanout_load.mjs --target corral --url ws://127.0.0.1:8080/acp \
//        --key $KEY --sessions 100 --clients 10 --rate 20000 -- \
//        build/bench/bench/corral-fanout-emit --worker-endpoint ... \
//        --session-endpoint ...
// Options: --warmup S (2) --bytes B (64, text per event) --server-pid
// PID[,PID...] (CPU and RSS over the window) --connect-concurrency N (200)
// --parser raw|ws (how clients read frames, see rawReader) --label TEXT
// --header --format row|json; --print-header prints the header and exits.
//
// ws comes from tests/e2e/node_modules (cd tests/e2e && npm ci).
import { createRequire } from 'node:module';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { performance, monitorEventLoopDelay } from 'node:perf_hooks';

const require = createRequire(new URL('../tests/e2e/package.json', import.meta.url));
const WebSocket = require('ws');

/* ---------------------------------------------------------------- */
/* Options                                                           */

const o = {
  target: 'baseline', url: '', key: process.env.CORRAL_BENCH_KEY || '', attach: 'attach',
  sessions: 100, clients: 10, rate: 20000, duration: 10, warmup: 2, bytes: 64,
  'server-pid': '', 'connect-concurrency': 200, label: '', header: false, format: 'row',
  parser: 'raw', 'print-header': false,
};
let emitterArgv = [];
{
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '--') { emitterArgv = a.slice(i + 1); break; }
    const k = a[i].replace(/^--/, '');
    if (!(k in o)) die(`unknown option ${a[i]}`);
    if (typeof o[k] === 'boolean') { o[k] = true; continue; }
    const v = a[++i];
    if (v === undefined) die(`${a[i - 1]} needs a value`);
    o[k] = typeof o[k] === 'number' ? Number(v) : v;
  }
  if (!o.url) o.url = o.target === 'corral' ? 'ws://127.0.0.1:8080/acp' : 'ws://127.0.0.1:8091';
  const bad = !['baseline', 'corral'].includes(o.target) || !['attach', 'load'].includes(o.attach) ||
    !(o.sessions >= 1) || !(o.clients >= 1) || !(o.rate > 0) || !(o.duration > 0) ||
    !(o.warmup >= 0) || !(o.bytes >= 0 && o.bytes <= 65536) || !['row', 'json'].includes(o.format) ||
    !['raw', 'ws'].includes(o.parser) ||
    (o.target === 'corral' && emitterArgv.length === 0);
  if (bad) die('bad arguments (corral mode needs the emitter command after --)');
}
const HEADER = '| target | sessions × clients | offered ev/s | emitted ev/s | delivered frames/s | ' +
  'p50 / p95 / p99 / max ms | missing | gaps | dups | server CPU | server RSS MiB | ' +
  'loadgen CPU | loadgen loop p99 ms | store commit p99 ms |\n' +
  '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|';
if (o['print-header']) {
  console.log(HEADER);
  process.exit(0);
}
const serverPids = o['server-pid'] ? String(o['server-pid']).split(',').map(Number) : [];

function die(msg) {
  console.error(`fanout-load: ${msg}`);
  process.exit(2);
}

/* ---------------------------------------------------------------- */
/* Clock                                                             */

// Offset (µs) from timeOrigin + now() to the wall clock Date.now() and the
// C emitter read.  Date.now() changes exactly on a millisecond edge: spin
// until it does, and at that instant the wall clock is a whole ms.
function calibrate() {
  const s = [];
  for (let i = 0; i < 5; i++) {
    const d0 = Date.now();
    let d;
    while ((d = Date.now()) === d0);
    s.push(d * 1000 - (performance.timeOrigin + performance.now()) * 1000);
  }
  s.sort((x, y) => x - y);
  return s[2];
}
const origin = performance.timeOrigin;
let clockOffset = calibrate();
const nowUs = () => (origin + performance.now()) * 1000 + clockOffset;

/* ---------------------------------------------------------------- */
/* Measurement                                                       */

const HIST = 1000000; // 1 µs buckets up to 1 s; the last one holds the rest
const hist = new Uint32Array(HIST + 1);
let winStart = Infinity, winEnd = Infinity; // emit times measured (µs)
let arriving = false; // frames arriving now count for delivered/s
let measured = 0, latMax = 0, arrived = 0, eventFrames = 0, otherFrames = 0;
let gaps = 0, dups = 0;

const T_NEEDLE = Buffer.from('"t=');
const SEQ_NEEDLE = Buffer.from('"seq":');

// The unsigned integer at buf[i...], skipping spaces; -1 if no digits.
function readUint(buf, i) {
  while (buf[i] === 0x20) i++;
  let v = 0, any = false;
  for (let c = buf[i]; c >= 0x30 && c <= 0x39; c = buf[++i]) {
    v = v * 10 + (c - 0x30);
    any = true;
  }
  return any ? v : -1;
}

// The hot path: every frame every client receives.
function onFrame(client, data) {
  const now = nowUs();
  const si = data.indexOf(SEQ_NEEDLE);
  if (si >= 0) {
    const seq = readUint(data, si + SEQ_NEEDLE.length);
    if (seq >= 0) {
      if (client.next === 0 || seq === client.next) client.next = seq + 1;
      else if (seq > client.next) { gaps += seq - client.next; client.next = seq + 1; }
      else dups++;
    }
  }
  const ti = data.indexOf(T_NEEDLE);
  if (ti < 0) {
    otherFrames++;
    if (!client.live) client.control(data);
    return;
  }
  eventFrames++;
  if (arriving) arrived++;
  const t = readUint(data, ti + T_NEEDLE.length);
  if (t < winStart || t >= winEnd) return;
  let lat = Math.round(now - t);
  if (lat < 0) lat = 0;
  hist[lat < HIST ? lat : HIST]++;
  if (lat > latMax) latMax = lat;
  measured++;
}

// A percentile in µs; Infinity when it lies beyond the histogram (> 1 s).
function pct(p) {
  if (!measured) return NaN;
  const want = Math.floor(measured * p / 100);
  let seen = 0;
  for (let k = 0; k < HIST; k++) {
    seen += hist[k];
    if (seen > want) return k;
  }
  return Infinity;
}

function procCpu(pid) { // seconds of CPU, user + system
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // CLK_TCK is 100 on Linux
  } catch { return NaN; }
}
function procRssMiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch { return NaN; }
}

/* ---------------------------------------------------------------- */
/* Clients                                                           */

// --parser raw (the default): once a client is open, its socket's bytes go
// to this frame reader instead of ws's Receiver (a Writable stream per
// socket, several emits per frame), which halves the load generator's CPU
// per frame.  ws still did the handshake and still sends (pongs, requests).
// Server frames are unmasked; fragments are not reassembled (neither
// server sends them for frames this small); a ping gets ws.pong().
function rawReader(client) {
  let pending = null;
  return (chunk) => {
    const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    pending = null;
    let i = 0;
    const n = buf.length;
    while (n - i >= 2) {
      let len = buf[i + 1] & 0x7f, h = 2;
      if (len === 126) {
        if (n - i < 4) break;
        len = buf.readUInt16BE(i + 2);
        h = 4;
      } else if (len === 127) {
        if (n - i < 10) break;
        len = Number(buf.readBigUInt64BE(i + 2));
        h = 10;
      }
      if (n - i < h + len) break;
      const op = buf[i] & 0x0f;
      if (op <= 2) onFrame(client, buf.subarray(i + h, i + h + len));
      else if (op === 9) client.ws.pong(buf.subarray(i + h, i + h + len));
      else if (op === 8) client.ws.terminate();
      i += h + len;
    }
    if (i < n) pending = buf.subarray(i);
  };
}

const wsOpts = { perMessageDeflate: false, skipUTF8Validation: true, maxPayload: 64 << 20 };
let rpcErrors = 0;

// One subscriber.  Baseline: live as soon as open.  Corral: initialize,
// then attach (or load); live once that answer came.
function openClient(session, idx) {
  return new Promise((resolve) => {
    const url = o.target === 'baseline'
      ? `${o.url}/sub?topic=${encodeURIComponent(session)}` : o.url;
    const headers = o.target === 'corral' && o.key ? { Authorization: `Bearer ${o.key}` } : {};
    const ws = new WebSocket(url, { ...wsOpts, headers });
    const client = { ws, session, next: 0, live: false, control: null };
    let settled = false;
    const done = (ok, why) => {
      if (settled) return;
      settled = true;
      if (!ok && rpcErrors++ < 5) console.error(`fanout-load: client ${idx} of ${session}: ${why}`);
      resolve(ok ? client : null);
    };
    client.control = (data) => {
      // Corral only: answers to our two requests (few; parse them).
      let m;
      try { m = JSON.parse(data.toString()); } catch { return; }
      if (m.id === undefined || m.method !== undefined) return;
      if (m.error) return done(false, `${m.id === 1 ? 'initialize' : o.attach}: ${JSON.stringify(m.error)}`);
      if (m.id === 1) {
        const method = o.attach === 'load' ? 'session/load' : '_corral/session/attach';
        const params = o.attach === 'load'
          ? { sessionId: session, cwd: '/', mcpServers: [] } : { sessionId: session, afterSeq: 0 };
        ws.send(JSON.stringify({ jsonrpc: '2.0', id: 2, method, params }));
      } else if (m.id === 2) {
        client.live = true;
        done(true);
      }
    };
    ws.on('message', (data) => onFrame(client, data));
    ws.on('open', () => {
      if (o.parser === 'raw') {
        const sock = ws._socket; // ws internals: take the bytes from its Receiver
        for (const l of sock.listeners('data')) sock.removeListener('data', l);
        sock.on('data', rawReader(client));
      }
      if (o.target === 'baseline') {
        client.live = true;
        return done(true);
      }
      ws.send(JSON.stringify({
        jsonrpc: '2.0', id: 1, method: 'initialize',
        params: { protocolVersion: 1, clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false } },
      }));
    });
    ws.on('unexpected-response', (req, res) => done(false, `HTTP ${res.statusCode}`));
    ws.on('error', (e) => done(false, e.message));
    ws.on('close', (code) => {
      if (!settled) done(false, `closed ${code}`);
      else if (!stopping && closedEarly++ < 5) console.error(`fanout-load: a client of ${session} closed (${code})`);
    });
    setTimeout(() => done(false, 'no answer in 30 s'), 30000).unref();
  });
}
let stopping = false, closedEarly = 0;

async function openAll(sessions) {
  const jobs = [];
  for (const s of sessions) for (let c = 0; c < o.clients; c++) jobs.push([s, c]);
  const clients = [];
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const [s, c] = jobs[next++];
      const cl = await openClient(s, c);
      if (cl) clients.push(cl);
    }
  };
  await Promise.all(Array.from({ length: Math.min(o['connect-concurrency'], jobs.length) }, worker));
  return clients;
}

/* ---------------------------------------------------------------- */
/* Event sources                                                     */

const pad = 'x'.repeat(o.bytes);
function text(n) { // `t=<µs> n=<k> ` padded to o.bytes
  const head = `t=${Math.round(nowUs())} n=${n} `;
  return head.length >= o.bytes ? head : head + pad.slice(head.length);
}

// Baseline: publish through /pub at the rate, round robin over the topics,
// on a 1 ms timer; the sends of one tick leave in one write (cork).
function baselineSource(sessions) {
  return new Promise((resolve, reject) => {
    const pub = new WebSocket(`${o.url}/pub`, wsOpts);
    pub.on('error', reject);
    pub.on('open', () => {
      const prefix = sessions.map((s) => `{"topic":${JSON.stringify(s)},"data":"`);
      const src = { emitted: 0, notSent: 0, t0: 0, done: null, cpu: '' };
      src.done = new Promise((res) => {
        const t0 = performance.now();
        src.t0 = nowUs();
        let next = 0;
        const timer = setInterval(() => {
          const now = performance.now();
          if (now - t0 >= (o.warmup + o.duration) * 1000) {
            clearInterval(timer);
            res();
            return;
          }
          let allowed = Math.floor(o.rate * (now - t0) / 1000) - src.emitted - src.notSent;
          const sock = pub._socket; // ws internals: one writev per tick
          sock.cork();
          for (let k = 0; allowed >= 1 && k < 4096; k++, allowed--) {
            pub.send(prefix[next] + text(src.emitted) + '"}');
            next = next + 1 === sessions.length ? 0 : next + 1;
            src.emitted++;
          }
          sock.uncork();
          // No burst to catch up after a stall: the rate stays steady.
          if (allowed > o.rate / 100) src.notSent += allowed;
        }, 1);
      });
      src.close = () => pub.close();
      resolve(src);
    });
  });
}

// Corral: start the emitter, read its sessions; `go` starts the events.
function corralEmitter() {
  const args = [...emitterArgv, '--sessions', String(o.sessions), '--rate', String(o.rate),
    '--duration', String(o.warmup + o.duration), '--warmup', String(o.warmup),
    '--bytes', String(o.bytes), '--start', 'go'];
  const child = spawn(args[0], args.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
  const em = { child, sessions: [], emitted: 0, notSent: 0, t0: 0, lines: [], pid: child.pid };
  let onReady, onEmitting, onDone;
  em.ready = new Promise((r, j) => {
    onReady = r;
    child.on('exit', () => j(new Error('the emitter exited early')));
    child.on('error', (e) => j(new Error(`cannot start the emitter: ${e.message}`)));
  });
  em.emitting = new Promise((r) => { onEmitting = r; });
  em.done = new Promise((r) => { onDone = r; child.on('exit', r); });
  createInterface({ input: child.stdout }).on('line', (line) => {
    const w = line.split(' ');
    if (w[0] === 'session') em.sessions.push(w[1]);
    else if (w[0] === 'ready') onReady();
    else if (w[0] === 'emitting') { em.t0 = Number(w[1]); onEmitting(); }
    else if (w[0] === 'done') onDone();
    else {
      if (w[0] === 'store:') {
        const m = / p99 (\d+) us/.exec(line);
        if (m) em.commitP99 = Number(m[1]);
      }
      if (w[0] === 'emitted') {
        em.emitted = Number(w[1]);
        const m = /not sent (\d+)/.exec(line);
        if (m) em.notSent = Number(m[1]);
      }
      em.lines.push(line);
    }
  });
  em.go = () => child.stdin.write('go\n');
  return em;
}

/* ---------------------------------------------------------------- */
/* The run                                                           */

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  let sessions, em = null;
  if (o.target === 'corral') {
    em = corralEmitter();
    await em.ready;
    sessions = em.sessions;
  } else {
    const run = Math.random().toString(36).slice(2, 8);
    sessions = Array.from({ length: o.sessions }, (_, i) => `bench-${run}-${i}`);
  }
  const tOpen = performance.now();
  const clients = await openAll(sessions);
  const openS = (performance.now() - tOpen) / 1000;
  console.error(`fanout-load: ${clients.length} of ${sessions.length * o.clients} clients ` +
    `${o.target === 'corral' ? 'attached' : 'connected'} in ${openS.toFixed(1)} s`);
  if (clients.length === 0) {
    if (em) em.child.kill('SIGTERM');
    die('no client connected');
  }

  // Start the source; the window opens after the warm-up.
  let src;
  if (em) {
    em.go();
    await em.emitting;
    src = em;
  } else {
    src = await baselineSource(sessions);
  }
  winStart = src.t0 + o.warmup * 1e6;
  winEnd = winStart + o.duration * 1e6;
  const loop = monitorEventLoopDelay({ resolution: 1 });
  let cpu0, pcpu0, t0;
  await sleep(Math.max(0, (winStart - nowUs()) / 1000));
  arriving = true;
  loop.enable();
  cpu0 = process.cpuUsage();
  pcpu0 = serverPids.map(procCpu);
  t0 = performance.now();
  const arrived0 = arrived;
  await sleep(Math.max(0, (winEnd - nowUs()) / 1000));
  arriving = false;
  const secs = (performance.now() - t0) / 1000;
  const cpu1 = process.cpuUsage(cpu0);
  const pcpu = serverPids.map((p, i) => (procCpu(p) - pcpu0[i]) / secs * 100);
  const prss = serverPids.map(procRssMiB);
  loop.disable();
  const delivered = (arrived - arrived0) / secs;

  // Let the last frames in (until 1 s of quiet, at most 10 s), then stop.
  await src.done;
  for (let last = -1, n = 0; n < 10 && eventFrames !== last; n++) {
    last = eventFrames;
    await sleep(1000);
  }
  if (em) await em.done;
  const drift = calibrate() - clockOffset;
  stopping = true;
  for (const c of clients) c.ws.terminate();
  if (src.close) src.close();

  // What should have arrived: every event to each client of its session.
  const perSession = new Map();
  for (const c of clients) perSession.set(c.session, (perSession.get(c.session) || 0) + 1);
  const emitted = src.emitted;
  let expected = 0;
  for (let i = 0; i < sessions.length; i++) {
    const events = Math.floor(emitted / sessions.length) + (i < emitted % sessions.length ? 1 : 0);
    expected += events * (perSession.get(sessions[i]) || 0);
  }
  const missing = expected - eventFrames;
  const emitRate = emitted / (o.warmup + o.duration);
  const r = {
    target: o.target, label: o.label, sessions: o.sessions, clients: o.clients,
    connected: clients.length, offered: o.rate, emitted_per_s: Math.round(emitRate),
    not_sent: src.notSent, delivered_per_s: Math.round(delivered),
    p50_ms: pct(50) / 1000, p95_ms: pct(95) / 1000, p99_ms: pct(99) / 1000,
    max_ms: latMax / 1000, measured, missing, gaps, dups, closed_early: closedEarly,
    server_cpu_pct: pcpu.map(Math.round), server_rss_mib: prss.map((x) => Math.round(x)),
    loadgen_cpu_pct: Math.round((cpu1.user + cpu1.system) / 1e4 / secs),
    loadgen_loop_p99_ms: loop.percentile(99) / 1e6, clock_drift_us: Math.round(drift),
  };
  for (const line of em ? em.lines : []) console.error(`emitter: ${line}`);
  console.error(`fanout-load: window ${secs.toFixed(1)} s; ${eventFrames} event frames in all ` +
    `(${otherFrames} other), ${missing} missing of ${expected}; clock drift over the run ` +
    `${r.clock_drift_us} µs; load generator CPU ${Math.round(cpu1.user / 1e4 / secs)}% user + ` +
    `${Math.round(cpu1.system / 1e4 / secs)}% system, event-loop delay p99 ` +
    `${r.loadgen_loop_p99_ms.toFixed(2)} ms`);
  if (o.format === 'json') {
    console.log(JSON.stringify(r));
  } else {
    if (o.header) console.log(HEADER);
    const f = (x) => (Number.isNaN(x) ? '-' : x === Infinity ? '>1000' : x.toFixed(2));
    console.log(`| ${o.target}${o.label ? ' ' + o.label : ''} | ${o.sessions} × ${o.clients} | ` +
      `${o.rate} | ${r.emitted_per_s} | ${r.delivered_per_s} | ` +
      `${f(r.p50_ms)} / ${f(r.p95_ms)} / ${f(r.p99_ms)} / ${f(r.max_ms)} | ${missing} | ${gaps} | ` +
      `${dups} | ${r.server_cpu_pct.map((x) => x + '%').join(', ') || '-'} | ` +
      `${r.server_rss_mib.join(', ') || '-'} | ${r.loadgen_cpu_pct}% | ${r.loadgen_loop_p99_ms.toFixed(2)} | ` +
      `${src.commitP99 !== undefined ? (src.commitP99 / 1000).toFixed(2) : '-'} |`);
  }
  process.exit(missing || gaps || dups ? 1 : 0);
}

main().catch((e) => die(e.stack || String(e)));
