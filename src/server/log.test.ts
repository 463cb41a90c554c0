// Unit tests for the server's log (text and JSON lines) and its metrics (an observer of the same events).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ServerLog } from './log.js';
import { ServerMetrics } from './metrics.js';

const AT = new Date('2026-11-28T14:02:11.532Z');

function capture(format: 'text' | 'json'): { log: ServerLog; lines: string[] } {
  const lines: string[] = [];
  return { log: new ServerLog(format, (l) => void lines.push(l), 'fusedctl', () => AT), lines };
}

test('text lines keep the server\'s wording; maps and grants are not logged', () => {
  const { log, lines } = capture('text');
  log.event({ event: 'authfail', peer: '10.0.0.7:5', node: 'edit9' });
  log.event({ event: 'map', peer: 'p', node: 'n', volume: 'v', mode: 'read', direct: true, seconds: 0.001 });
  log.event({ event: 'grant', node: 'n', volume: 'v', bytes: 4 });
  log.line('volume v: /srv/v');
  assert.deepEqual(lines, ['fusedctl: 10.0.0.7:5: node edit9: authentication failed\n', 'fusedctl: volume v: /srv/v\n']);
});

test('JSON lines: one object each, fixed fields always present, the event\'s own fields after them', () => {
  const { log, lines } = capture('json');
  log.event({ event: 'authfail', peer: '10.0.0.7:5', node: 'edit9' });
  log.event({ event: 'refused', peer: 'p:1', node: 'n', volume: 'v', verb: 'MAP', code: 'ACCESS', reason: 'read-only' });
  log.event({ event: 'reload', result: 'refused', reason: 'f:3: bad' });
  log.line('anything');
  const docs = lines.map((l) => {
    assert.ok(l.endsWith('\n') && !l.slice(0, -1).includes('\n'));
    return JSON.parse(l) as Record<string, unknown>;
  });
  for (const d of docs) assert.deepEqual(Object.keys(d).slice(0, 7), ['time', 'level', 'event', 'node', 'volume', 'peer', 'msg']);
  assert.deepEqual(docs[0], {
    time: '2026-11-28T14:02:11.532Z', level: 'warn', event: 'authfail', node: 'edit9', volume: null, peer: '10.0.0.7:5',
    msg: '10.0.0.7:5: node edit9: authentication failed',
  });
  assert.deepEqual([docs[1]!.code, docs[1]!.verb, docs[1]!.volume], ['ACCESS', 'MAP', 'v']);
  assert.deepEqual([docs[2]!.level, docs[2]!.result], ['error', 'refused']);
  assert.deepEqual([docs[3]!.event, docs[3]!.node], ['message', null]);
  // A reload switches the format at once.
  log.format = 'text';
  log.line('back to text');
  assert.equal(lines.at(-1), 'fusedctl: back to text\n');
});

test('metrics count what the events say, and read leases and connections when scraped', async () => {
  let leases = 3;
  const m = new ServerMetrics({ leasesHeld: () => leases, connections: () => ({ authenticated: 2, unauthenticated: 1 }) });
  m.observe({ event: 'map', peer: 'p', node: 'n', volume: 'v', mode: 'read', direct: true, seconds: 0.0003 });
  m.observe({ event: 'map', peer: 'p', node: 'n', volume: 'v', mode: 'write', direct: false, seconds: 2 });
  m.observe({ event: 'grant', node: 'n', volume: 'v', bytes: 4096 });
  m.observe({ event: 'grant', node: 'n', volume: 'v', bytes: 1000 });
  m.observe({ event: 'revoke', node: 'n', lease: 'x', after: 'recall' });
  leases = 5;
  const text = await m.registry.metrics();
  const has = (line: string) => assert.ok(text.split('\n').includes(line), `missing: ${line}`);
  has('fused_maps_total{volume="v",mode="read",path="direct"} 1');
  has('fused_maps_total{volume="v",mode="write",path="network"} 1');
  has('fused_map_duration_seconds_bucket{le="0.00025",mode="read"} 0');
  has('fused_map_duration_seconds_bucket{le="0.0005",mode="read"} 1');
  has('fused_map_duration_seconds_bucket{le="+Inf",mode="write"} 1');
  has('fused_granted_bytes_total{node="n"} 5096');
  has('fused_grants_total{node="n"} 2');
  has('fused_revocations_total{after="recall"} 1');
  has('fused_leases_held 5');
  has('fused_connections{state="authenticated"} 2');
});
