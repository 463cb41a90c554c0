// Unit tests for the fuse registry's locked read-modify-write: concurrent updaters in one and in several processes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FusedError } from '../errors.js';
import { loadFuses, updateFuses, type FuseRecord } from './registry.js';

const record = (mountpoint: string): FuseRecord => ({
  mountpoint, server: '10.0.0.1:7447', volume: 'vol', uuid: 'u', fstype: 'ext4', blockSize: 4096, device: '/dev/loop0',
  node: 'n', keyFile: '/etc/fused/node.key', fusedAt: new Date(0).toISOString(),
});

/** An updater that reads, waits (so another can read the same old list), then adds its record. */
const addSlowly = (dir: string, name: string) =>
  updateFuses(async (records) => {
    await sleep(20);
    return [...records, record(name)];
  }, dir);

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'fused-registry-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('concurrent updaters in one process lose no record', () =>
  withDir(async (dir) => {
    await Promise.all(Array.from({ length: 8 }, (_, i) => addSlowly(dir, `/mnt/${i}`)));
    const names = (await loadFuses(dir)).map((r) => r.mountpoint).sort();
    assert.deepEqual(names, Array.from({ length: 8 }, (_, i) => `/mnt/${i}`).sort());
    // The lock and the temporary file are gone.
    assert.deepEqual(await readdir(dir), ['fuses.json']);
  }));

test('updaters in two processes at once lose no record', () =>
  withDir(async (dir) => {
    const registry = new URL('./registry.js', import.meta.url).href;
    const script = `
      import { setTimeout as sleep } from 'node:timers/promises';
      const { updateFuses } = await import(process.argv[1]);
      const [dir, tag] = process.argv.slice(2);
      for (let i = 0; i < 15; i++) {
        await updateFuses(async (records) => {
          await sleep(5);
          return [...records, { mountpoint: '/mnt/' + tag + '-' + i }];
        }, dir);
      }`;
    const run = (tag: string) =>
      new Promise<void>((resolve, reject) => {
        const child = spawn(process.execPath, ['--input-type=module', '-e', script, registry, dir, tag], { stdio: ['ignore', 'inherit', 'inherit'] });
        child.on('error', reject);
        child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`updater ${tag} exited with ${code}`))));
      });
    await Promise.all([run('a'), run('b')]);
    const names = (await loadFuses(dir)).map((r) => r.mountpoint);
    assert.equal(names.length, 30);
    for (const tag of ['a', 'b']) for (let i = 0; i < 15; i++) assert.ok(names.includes(`/mnt/${tag}-${i}`), `/mnt/${tag}-${i} lost`);
  }));

test('a lock left by a dead process is taken over', () =>
  withDir(async (dir) => {
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    assert.match(dead, /^\d+$/);
    await writeFile(join(dir, 'fuses.json.lock'), `${dead}\n`);
    await updateFuses((records) => [...records, record('/mnt/x')], dir, 2000);
    assert.deepEqual((await loadFuses(dir)).map((r) => r.mountpoint), ['/mnt/x']);
    assert.deepEqual(await readdir(dir), ['fuses.json']);
  }));

test('an empty lock left for seconds (its maker died before writing its PID) is taken over', () =>
  withDir(async (dir) => {
    const lock = join(dir, 'fuses.json.lock');
    await writeFile(lock, '');
    const past = new Date(Date.now() - 60_000);
    await utimes(lock, past, past);
    await updateFuses((records) => [...records, record('/mnt/y')], dir, 2000);
    assert.deepEqual((await loadFuses(dir)).map((r) => r.mountpoint), ['/mnt/y']);
  }));

test('a lock held by a live process is waited for, then refused with a clear error', () =>
  withDir(async (dir) => {
    // The test runner that started us is alive for the whole test.
    await writeFile(join(dir, 'fuses.json.lock'), `${process.ppid}\n`);
    const t0 = Date.now();
    await assert.rejects(updateFuses((records) => records, dir, 300), (err: unknown) => {
      assert.ok(err instanceof FusedError);
      assert.match(err.message, new RegExp(`^locked by process ${process.ppid} for over`));
      assert.equal(err.subject, join(dir, 'fuses.json.lock'));
      return true;
    });
    assert.ok(Date.now() - t0 >= 300);
    // Nothing was written, and the other holder's lock is left alone.
    assert.deepEqual(await readdir(dir), ['fuses.json.lock']);
  }));

test('a change that throws writes nothing and releases the lock', () =>
  withDir(async (dir) => {
    await updateFuses(() => [record('/mnt/a')], dir);
    await assert.rejects(updateFuses(() => { throw new FusedError('failure', 'not fused', '/mnt/b'); }, dir), /not fused/);
    await updateFuses((records) => [...records, record('/mnt/c')], dir, 500);
    assert.deepEqual((await loadFuses(dir)).map((r) => r.mountpoint), ['/mnt/a', '/mnt/c']);
  }));
