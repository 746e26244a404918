#!/usr/bin/env node
// ws_baseline.mjs - the yardstick for the gateway's fan-out (DESIGN §14, the
// gateway benchmark issue, part c): a plain Node broadcast server on the npm
// `ws` package that persists nothing, written the way its README writes one.
//
//   ws://HOST:PORT/sub?topic=T   a subscriber of topic T (a session)
//   ws://HOST:PORT/pub           a publisher: each text message
//                                {"topic": T, "data": TEXT} goes to every
//                                subscriber of T
//   ws://HOST:PORT/<anything>    an idle connection (bench/ws_idle.c)
//   GET /health                  "ok"
//
// What a subscriber receives is the frame the gateway will send for an
// agent_message_chunk event (DESIGN §5 step 6, §6), so both servers carry
// the same bytes to the same load generator (bench/fanout_load.mjs):
//
//   {"jsonrpc":"2.0","method":"session/update","params":{"sessionId":T,
//    "update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text",
//    "text":TEXT}},"_meta":{"seq":N,"ts":MS}}}
//
// seq counts per topic from 1, in memory only (the gateway's comes from the
// session service's spine); ts is Unix ms.  The frame is serialised once per
// event and handed to ws.send for each subscriber (no per-client copy).
//
// Pings: every --ping seconds (default 30, 0 = never) each connection is
// pinged; one that missed 2 pongs is terminated (the gateway's rule).
//
//   node bench/ws_baseline.mjs [--host 127.0.0.1] [--port 8091] [--ping 30]
//
// Prints "listening on HOST:PORT pid PID" once ready.  Needs `ulimit -n`
// above the number of connections it is to hold.  ws comes from
// tests/e2e/node_modules (cd tests/e2e && npm ci).
import { createRequire } from 'node:module';
import http from 'node:http';

const require = createRequire(new URL('../tests/e2e/package.json', import.meta.url));
const { WebSocketServer } = require('ws');

const opts = { host: '127.0.0.1', port: 8091, ping: 30 };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, ''), v = process.argv[i + 1];
  if (!(k in opts) || v === undefined) {
    console.error('usage: ws_baseline.mjs [--host H] [--port P] [--ping SECONDS]');
    process.exit(2);
  }
  opts[k] = k === 'host' ? v : Number(v);
}

const topics = new Map(); // topic -> { subs: Set<WebSocket>, seq: number }
let published = 0, sent = 0;

function topicOf(name) {
  let t = topics.get(name);
  if (!t) topics.set(name, (t = { subs: new Set(), seq: 0 }));
  return t;
}

function publish(raw) {
  let msg;
  try {
    msg = JSON.parse(raw);
  } catch {
    return;
  }
  if (typeof msg.topic !== 'string' || typeof msg.data !== 'string') return;
  const t = topicOf(msg.topic);
  t.seq++;
  published++;
  const frame = Buffer.from(JSON.stringify({
    jsonrpc: '2.0',
    method: 'session/update',
    params: {
      sessionId: msg.topic,
      update: { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: msg.data } },
      _meta: { seq: t.seq, ts: Date.now() },
    },
  }));
  for (const ws of t.subs) {
    ws.send(frame, { binary: false });
    sent++;
  }
}

const server = http.createServer((req, res) => {
  const ok = req.url === '/health';
  res.writeHead(ok ? 200 : 404, { 'content-type': 'text/plain' });
  res.end(ok ? 'ok\n' : 'not found\n');
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 1 << 20 });

server.on('upgrade', (req, socket, head) => {
  wss.handleUpgrade(req, socket, head, (ws) => {
    const q = req.url.indexOf('?');
    const path = q < 0 ? req.url : req.url.slice(0, q);
    ws.missed = 0;
    ws.on('pong', () => { ws.missed = 0; });
    ws.on('error', () => {});
    if (path === '/pub') {
      ws.on('message', (data) => publish(data));
    } else if (path === '/sub') {
      const topic = new URLSearchParams(req.url.slice(q + 1)).get('topic');
      if (q < 0 || !topic) {
        ws.close(1008, 'topic required');
        return;
      }
      const t = topicOf(topic);
      t.subs.add(ws);
      ws.on('close', () => t.subs.delete(ws));
    }
    // anything else: an idle connection, held until the client goes
  });
});

if (opts.ping > 0) {
  setInterval(() => {
    for (const ws of wss.clients) {
      if (ws.missed >= 2) {
        ws.terminate();
        continue;
      }
      ws.missed++;
      ws.ping();
    }
  }, opts.ping * 1000);
}

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    console.error(`ws-baseline: ${published} events published, ${sent} frames sent, ` +
      `${wss.clients.size} connections at exit`);
    process.exit(0);
  });
}

server.listen(opts.port, opts.host, 4096, () => {
  console.log(`listening on ${opts.host}:${opts.port} pid ${process.pid}`);
});
