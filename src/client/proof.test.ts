// Unit tests for the content proof with a fake session and device (no server, no devices).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FusedError } from '../errors.js';
import type { WireExtent } from '../protocol/index.js';
import type { Device } from './device.js';
import { proveDevice } from './proof.js';
import type { FileMap, Session } from './session.js';

const TOKEN = '0123456789abcdef0123456789abcdef';
const BLOCK = 4096;

/** A session whose probe file maps to EXTENTS, a device whose bytes are DISK; records the requests made. */
function fakes(extents: WireExtent[], disk: Buffer, opts: { fsSize?: number; token?: string } = {}) {
  const calls: string[] = [];
  const session = {
    probe: async () => (calls.push('PROBE'), { name: '.fused-probe-00ff', token: opts.token ?? TOKEN }),
    unprobe: async () => void calls.push('UNPROBE'),
    map: async (_v: string, path: Buffer): Promise<FileMap> => {
      calls.push(`MAP ${path.toString()}`);
      return { lease: 'L1', size: BLOCK, blockSize: BLOCK, change: 'c', extents };
    },
    release: async (lease: string) => void calls.push(`RELEASE ${lease}`),
  } as unknown as Session;
  const device = {
    path: '/dev/fake0',
    info: { size: disk.length },
    fsSize: opts.fsSize ?? disk.length,
    readInto: async (_scratch: Buffer, position: number, length: number) => {
      if (position + length > disk.length) throw new FusedError('failure', 'short read', '/dev/fake0');
      return disk.subarray(position, position + length);
    },
  } as unknown as Device;
  return { session, device, calls };
}

const data = (physical: number, state: WireExtent['state'] = 'DATA'): WireExtent[] =>
  [{ logical: 0, physical, length: BLOCK, state, flags: 0 }];

function diskWith(token: string, at: number): Buffer {
  const disk = Buffer.alloc(16 * BLOCK);
  disk.write(token.padEnd(BLOCK - 1, ' ') + '\n', at, 'ascii');
  return disk;
}

const refusal = (re: RegExp) => (err: unknown) =>
  err instanceof FusedError && err.kind === 'refused' && err.subject === '/dev/fake0' && re.test(err.message);

test('the token at the mapped block proves the device; the map is released and the probe removed', async () => {
  const { session, device, calls } = fakes(data(5 * BLOCK), diskWith(TOKEN, 5 * BLOCK));
  await proveDevice(session, 'vol', device);
  assert.deepEqual(calls, ['PROBE', 'MAP .fused-probe-00ff', 'RELEASE L1', 'UNPROBE']);
});

test('an older token (a clone or snapshot) is refused, naming the device; cleanup still happens', async () => {
  const { session, device, calls } = fakes(data(5 * BLOCK), diskWith('ffffffffffffffffffffffffffffffff', 5 * BLOCK));
  await assert.rejects(proveDevice(session, 'vol', device), refusal(/does not hold the volume's current content/));
  assert.deepEqual(calls, ['PROBE', 'MAP .fused-probe-00ff', 'RELEASE L1', 'UNPROBE']);
});

test('the token elsewhere on the device is not enough: only the mapped block counts', async () => {
  const { session, device } = fakes(data(6 * BLOCK), diskWith(TOKEN, 5 * BLOCK));
  await assert.rejects(proveDevice(session, 'vol', device), refusal(/current content/));
});

test('a probe block not mapped DATA, or outside the file system, proves nothing', async () => {
  for (const state of ['NETWORK', 'ZERO'] as const) {
    const { session, device } = fakes(data(5 * BLOCK, state), diskWith(TOKEN, 5 * BLOCK));
    await assert.rejects(proveDevice(session, 'vol', device), refusal(new RegExp(`DATA extent \\(${state}\\)`)));
  }
  const { session, device } = fakes(data(5 * BLOCK), diskWith(TOKEN, 5 * BLOCK), { fsSize: 4 * BLOCK });
  await assert.rejects(proveDevice(session, 'vol', device), refusal(/outside the device or its file system/));
});

test('a malformed token from the server is a failure, not a proof', async () => {
  const { session, device, calls } = fakes(data(5 * BLOCK), diskWith('', 5 * BLOCK), { token: '' });
  await assert.rejects(proveDevice(session, 'vol', device), (err) => err instanceof FusedError && err.kind === 'failure');
  assert.deepEqual(calls, ['PROBE', 'UNPROBE']);
});

test('a device still opening: the PROBE and its map go out meanwhile; a device that fails to open fails the proof and gives both back', async () => {
  const { session, device, calls } = fakes(data(5 * BLOCK), diskWith(TOKEN, 5 * BLOCK));
  let open!: (d: typeof device) => void;
  const opening = new Promise<typeof device>((resolve) => (open = resolve));
  const proving = proveDevice(session, 'vol', opening);
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(calls, ['PROBE', 'MAP .fused-probe-00ff'], 'the PROBE and its map did not wait for the device');
  open(device);
  assert.equal(await proving, device);
  assert.deepEqual(calls, ['PROBE', 'MAP .fused-probe-00ff', 'RELEASE L1', 'UNPROBE']);
  const second = fakes(data(5 * BLOCK), diskWith(TOKEN, 5 * BLOCK));
  const failed = new FusedError('refused', 'device UUID x differs from the volume\'s UUID y', '/dev/fake0');
  await assert.rejects(proveDevice(second.session, 'vol', Promise.reject(failed)), (err) => err === failed);
  assert.deepEqual(second.calls, ['PROBE', 'MAP .fused-probe-00ff', 'RELEASE L1', 'UNPROBE'], 'the map released, the probe given back');
});
