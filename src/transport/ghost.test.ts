// Unit tests for the ghost-file transport: chunk streams, the heartbeat, --ghost parsing, and a listener with a
// client in one temporary directory (standing in for the volume and its network mount).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FusedError } from '../errors.js';
import { ChunkStream, aliveProblem, formatAlive, parseAlive, type ChunkStreamOptions } from './ghost.js';
import { connectGhost } from './ghost-client.js';
import { GhostListener, parseGhostNodes, removeSession } from './ghost-server.js';

const tmp = () => mkdtemp(join(tmpdir(), 'fused-ghost-'));

/** Two ends of one session directory, both polling every ms. */
function pair(dir: string, extra: Partial<ChunkStreamOptions> = {}): { client: ChunkStream; server: ChunkStream } {
  const base = { dir, maxInBytes: 1 << 20, maxOutBytes: 1 << 20, pollMs: () => 1, peer: 'test' };
  return {
    client: new ChunkStream({ ...base, inPrefix: 's', outPrefix: 'c', ...extra }),
    server: new ChunkStream({ ...base, inPrefix: 'c', outPrefix: 's' }),
  };
}

const collect = (s: ChunkStream) =>
  new Promise<string>((resolve, reject) => {
    let text = '';
    s.on('data', (d: Buffer) => (text += d.toString()));
    s.on('end', () => resolve(text));
    s.on('error', reject);
  });

test('a chunk stream carries writes in order, ends with an empty chunk, and leaves no file behind', async () => {
  const dir = await tmp();
  try {
    const { client, server } = pair(dir);
    const got = collect(server);
    client.write('HELLO a 2 x\n');
    client.write('AUTH y\n');
    client.end('QUIT\n');
    assert.equal(await got, 'HELLO a 2 x\nAUTH y\nQUIT\n');
    server.destroy();
    client.destroy();
    assert.deepEqual(await readdir(dir), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('writes longer than the chunk limit are split, and a reader refuses a chunk over its limit', async () => {
  const dir = await tmp();
  try {
    const { client, server } = pair(dir, { maxOutBytes: 10 });
    const got = collect(server);
    client.end('0123456789abcdefghij-tail\n');
    assert.equal(await got, '0123456789abcdefghij-tail\n');
    const small = new ChunkStream({ dir, inPrefix: 'c', outPrefix: 's', maxInBytes: 4, maxOutBytes: 4, pollMs: () => 1, peer: 'p', untrusted: true });
    await writeFile(join(dir, 'c.0'), 'too long\n');
    const err = await new Promise<Error>((resolve) => {
      small.on('error', resolve);
      small.resume();
    });
    assert.match(err.message, /chunk of 9 bytes \(limit 4\)/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a chunk that is a symlink is refused, and a symlink at the temp name is replaced, not written through', async () => {
  const dir = await tmp();
  const outside = join(dir, '..', `${dir.split('/').pop()}-target`);
  try {
    await writeFile(outside, 'secret\n');
    const sess = join(dir, 'sess');
    await mkdir(sess);
    await symlink(outside, join(sess, '.s.0.tmp'));
    const server = new ChunkStream({ dir: sess, inPrefix: 'c', outPrefix: 's', maxInBytes: 100, maxOutBytes: 100, pollMs: () => 1, peer: 'p' });
    await new Promise<void>((resolve, reject) => server.write('OK\n', (e) => (e ? reject(e) : resolve())));
    assert.equal((await stat(outside)).size, 7, 'the file behind the symlink is untouched');
    await symlink(outside, join(sess, 'c.0'));
    const err = await new Promise<Error>((resolve) => {
      server.on('error', resolve);
      server.resume();
    });
    assert.match(err.message, /ELOOP|symbolic/);
  } finally {
    await rm(dir, { recursive: true, force: true });
    await rm(outside, { force: true });
  }
});

test('ALIVE: fresh, stale, missing and garbled', () => {
  const now = 1_000_000;
  assert.deepEqual(parseAlive(formatAlive('srv', now - 10, 1000), now), { node: 'srv', ageMs: 10, intervalMs: 1000 });
  assert.equal(aliveProblem(formatAlive('srv', now - 2000, 1000), now), undefined);
  assert.match(aliveProblem(formatAlive('srv', now - 60_000, 1000), now) ?? '', /srv\) has not been alive for 60 s/);
  assert.match(aliveProblem(undefined, now) ?? '', /no map server serves this volume/);
  assert.match(aliveProblem('hello\n', now) ?? '', /unreadable/);
});

test('--ghost NODE=UID[:GID]', () => {
  const isNode = (n: string) => /^[A-Za-z0-9._-]{1,64}$/.test(n);
  assert.deepEqual(parseGhostNodes(['a=1000', 'b=0:5'], isNode), [{ node: 'a', uid: 1000, gid: 1000 }, { node: 'b', uid: 0, gid: 5 }]);
  assert.throws(() => parseGhostNodes(['a'], isNode), /expected NODE=UID\[:GID\]/);
  assert.throws(() => parseGhostNodes(['a=x'], isNode), /expected NODE=UID/);
  assert.throws(() => parseGhostNodes(['a b=1'], isNode), /expected NODE=UID/);
  assert.throws(() => parseGhostNodes(['a=1', 'a=2'], isNode), /node a given twice/);
});

/** A listener whose "server" answers each line with "OK <line>", over a temporary volume. */
async function echoListener(vol: string, opts: { cleanupMs?: number; maxSessions?: number } = {}) {
  const uid = process.getuid!();
  const gid = process.getgid!();
  const logs: string[] = [];
  const host = {
    opts: { node: 'srv' },
    acceptStream(stream: ChunkStream) {
      stream.write('+ greeting\n');
      stream.on('data', (d: Buffer) => {
        for (const line of d.toString().split('\n').filter(Boolean)) stream.write(`OK ${line}\n`);
      });
      stream.on('end', () => stream.end());
      stream.on('error', () => {});
    },
  };
  const l = new GhostListener(host, { nodes: [{ node: 'n1', uid, gid }], cleanupMs: opts.cleanupMs ?? 60_000, maxSessionsPerNode: opts.maxSessions ?? 4, scanMs: 50, log: (s) => logs.push(s) });
  await mkdir(join(vol, '.fused'), { mode: 0o700 });
  await l.start([join(vol, '.fused')]);
  return { l, logs };
}

/** Lines from a client stream until `n` have arrived. */
function lines(s: ChunkStream, n: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    let text = '';
    const on = (d: Buffer) => {
      text += d.toString();
      const got = text.split('\n').filter(Boolean);
      if (got.length >= n) {
        s.off('data', on);
        resolve(got);
      }
    };
    s.on('data', on);
    s.on('error', reject);
  });
}

test('a client session through the listener: greeting, replies, and nothing left after it ends', async () => {
  const vol = await tmp();
  const { l } = await echoListener(vol);
  try {
    assert.equal((await stat(join(vol, '.fused'))).mode & 0o777, 0o711);
    assert.equal((await stat(join(vol, '.fused/ghost/n1'))).mode & 0o777, 0o700);
    let busy = true;
    const s = await connectGhost(vol, 'n1', { busy: () => busy, idleMs: () => 50 });
    const first = lines(s, 3);
    s.write('PING\n');
    s.write('VOLUMES\n');
    assert.deepEqual(await first, ['+ greeting', 'OK PING', 'OK VOLUMES']);
    busy = false;
    const closed = new Promise((r) => s.once('close', r));
    s.end('QUIT\n');
    await closed;
    for (let i = 0; i < 100 && (await readdir(join(vol, '.fused/ghost/n1'))).length > 0; i++) await sleep(20);
    assert.deepEqual(await readdir(join(vol, '.fused/ghost/n1')), []);
  } finally {
    await l.close();
    await rm(vol, { recursive: true, force: true });
  }
});

test('a session whose client went silent is removed after the cleanup interval; sessions past the limit are refused', async () => {
  const vol = await tmp();
  const { l, logs } = await echoListener(vol, { cleanupMs: 300, maxSessions: 1 });
  try {
    const nodeDir = join(vol, '.fused/ghost/n1');
    // A client that made its directory and then died: no heartbeat, no chunks.
    await mkdir(join(nodeDir, 'ab'.repeat(16)));
    for (let i = 0; i < 50 && !logs.some((s) => /ghost:n1\/abababab: ending \(stale\)/.test(s)); i++) await sleep(50);
    for (let i = 0; i < 50 && (await readdir(nodeDir)).length > 0; i++) await sleep(20);
    assert.deepEqual(await readdir(nodeDir), []);
    assert.ok(logs.some((s) => /no sign of the client/.test(s)), logs.join('\n'));
    // One session is the limit: a second one gets ERR BUSY as its greeting.
    const a = await connectGhost(vol, 'n1', { busy: () => true, idleMs: () => 50 });
    const b = await connectGhost(vol, 'n1', { busy: () => true, idleMs: () => 50 });
    const [greetA, greetB] = await Promise.all([lines(a, 1), lines(b, 1)]);
    const greetings = [greetA[0], greetB[0]].sort();
    assert.equal(greetings[0], '+ greeting');
    assert.match(greetings[1] ?? '', /^ERR BUSY too many ghost sessions for node n1 \(limit 1\)/);
    a.destroy();
    b.destroy();
  } finally {
    await l.close();
    await rm(vol, { recursive: true, force: true });
  }
});

test('a retiring listener (the server shutting down) refuses new clients at once and keeps the open session', async () => {
  const vol = await tmp();
  const { l } = await echoListener(vol);
  try {
    const open = await connectGhost(vol, 'n1', { busy: () => true, idleMs: () => 50 });
    assert.deepEqual(await lines(open, 1), ['+ greeting']);
    await l.retire();
    await assert.rejects(readFile(join(vol, '.fused/ghost/ALIVE')), { code: 'ENOENT' });
    // Several scans later ALIVE is still gone (the scan goes on for the open sessions but writes no ALIVE).
    await sleep(200);
    await assert.rejects(readFile(join(vol, '.fused/ghost/ALIVE')), { code: 'ENOENT' });
    const t0 = Date.now();
    await assert.rejects(connectGhost(vol, 'n1', { busy: () => true, idleMs: () => 50 }), /no map server serves this volume over ghost files/);
    assert.ok(Date.now() - t0 < 1000);
    // The session opened before goes on until the listener closes.
    const reply = lines(open, 1);
    open.write('PING\n');
    assert.deepEqual(await reply, ['OK PING']);
    open.destroy();
  } finally {
    await l.close();
    await rm(vol, { recursive: true, force: true });
  }
});

test('no listener: connecting says so at once', async () => {
  const vol = await tmp();
  try {
    await assert.rejects(connectGhost(vol, 'n1', { busy: () => true, idleMs: () => 50 }), (err: unknown) => {
      assert.ok(err instanceof FusedError);
      assert.equal(err.kind, 'unreachable');
      assert.match(err.message, /no map server serves this volume over ghost files/);
      return true;
    });
  } finally {
    await rm(vol, { recursive: true, force: true });
  }
});

test('removing a session never follows a link the node made', async () => {
  const dir = await tmp();
  try {
    const outside = join(dir, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'keep'), 'x');
    const nodeDir = join(dir, 'node');
    await mkdir(join(nodeDir, 'sess', 'sub'), { recursive: true });
    await writeFile(join(nodeDir, 'sess', 'c.0'), 'PING\n');
    await symlink(outside, join(nodeDir, 'sess', 'link'));
    await symlink(outside, join(nodeDir, 'swapped'));
    removeSession(join(nodeDir, 'sess'));
    removeSession(join(nodeDir, 'swapped'));
    assert.deepEqual(await readdir(outside), ['keep']);
    // The files and the link went; the subdirectory (which no session makes) is left to its owner.
    assert.deepEqual(await readdir(join(nodeDir, 'sess')), ['sub']);
    assert.deepEqual(await readdir(nodeDir), ['sess']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("a session in a node's directory that says HELLO as another node is refused", async () => {
  const vol = await tmp();
  const { l } = await echoListener(vol);
  try {
    const s = await connectGhost(vol, 'n1', { busy: () => true, idleMs: () => 50 });
    // After AUTHFAIL the server ends the session and removes its directory, as a TCP server closes the socket: the
    // client may see the directory gone (an error on the stream) before the test destroys it.
    s.on('error', () => {});
    const got = lines(s, 2);
    s.write('HEL');
    await sleep(30);
    s.write('LO n2 2 abc\n');
    const [greeting, answer] = await got;
    assert.equal(greeting, '+ greeting');
    assert.match(answer ?? '', /^ERR AUTHFAIL a session in node n1's ghost directory must say HELLO n1/);
    s.destroy();
    const t = await connectGhost(vol, 'n1', { busy: () => true, idleMs: () => 50 });
    const ok = lines(t, 2);
    t.write('HELLO n1 2 abc\nPING\n');
    assert.equal((await ok)[1], 'OK HELLO n1 2 abc');
    t.destroy();
  } finally {
    await l.close();
    await rm(vol, { recursive: true, force: true });
  }
});
