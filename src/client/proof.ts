// Proving a device by its content (safety rule 7): the server's fresh probe token must be on the client's own device.
import { FusedError, errorMessage } from '../errors.js';
import { alignedBuffer } from '../native/index.js';
import { validateMap } from '../volume/extents.js';
import { ALIGN, type Device } from './device.js';
import type { FileMap, Session } from './session.js';

export interface Probe { name: string; token: string }

const TOKEN = /^[0-9a-f]{32}$/;

const notOnDevice = (why: string) =>
  `does not hold the volume's current content (the server's probe token is not on it: a snapshot, clone or other disk with the same UUID?)${why ? `: ${why}` : ''}`;

/** PROBE, check the token is on DEVICE, UNPROBE; resolves to the device. Throws FusedError 'refused' naming the device
 *  when it is not. The device may still be opening: the PROBE goes out meanwhile (nothing is read from the device
 *  before the server's token is known), and a device that fails to open fails the proof, its probe given back. */
export async function proveDevice(session: Session, volume: string, device: Device | Promise<Device>): Promise<Device> {
  const opening = Promise.resolve(device);
  opening.catch(() => {}); // awaited below, whatever the PROBE does
  let probe: Probe;
  try {
    probe = await session.probe(volume);
  } catch (err) {
    if (err instanceof FusedError && err.kind === 'unreachable') throw err;
    throw new FusedError('failure', `cannot be proven by its content: map server: ${errorMessage(err)}`, (await opening).path);
  }
  try {
    await checkProbeOnDevice(session, volume, opening, probe);
    return await opening;
  } finally {
    // Awaited, though nothing depends on its answer: a request sent next (the reader's first GRANT) would only
    // queue behind it, and its wait would count as the throttle's.
    await session.unprobe(volume, probe.name).catch(() => {});
  }
}

/**
 * With a probe already made (fuse uses one probe for the mount and the device): MAP the probe file (while the device
 * may still be opening), check a DATA extent covers the token inside the device and the file system, read those bytes
 * with O_DIRECT, compare, RELEASE.
 */
export async function checkProbeOnDevice(session: Session, volume: string, opening: Device | Promise<Device>, probe: Probe): Promise<FileMap> {
  // A device that fails to open fails the check below (after the probe's map is released), never unwatched.
  Promise.resolve(opening).catch(() => {});
  if (!TOKEN.test(probe.token) || !probe.name) {
    throw new FusedError('failure', `map server sent a malformed probe (name '${probe.name}', token '${probe.token}')`);
  }
  const token = Buffer.from(probe.token, 'ascii');
  let map;
  try {
    map = await session.map(volume, Buffer.from(probe.name));
  } catch (err) {
    if (err instanceof FusedError && err.kind === 'unreachable') throw err;
    throw new FusedError('failure', `map server: cannot map the probe file: ${errorMessage(err)}`);
  }
  try {
    // The device may still have been opening while the probe was mapped: nothing is read from it before this.
    const device = await opening;
    const problem = validateMap(map.extents, map.size);
    if (problem) throw new FusedError('failure', `map server sent an invalid map of the probe file: ${problem}`);
    // The token is the first bytes of the probe file.
    const e = map.extents.find((x) => x.logical <= 0 && x.logical + x.length >= token.length);
    if (!e || e.state !== 'DATA') {
      throw new FusedError('refused', `cannot be proven: the probe file's map does not cover the token with a DATA extent (${e ? e.state : 'no extent'})`, device.path);
    }
    const at = e.physical - e.logical;
    const limit = Math.min(device.info.size || Infinity, device.fsSize);
    if (at < 0 || at + token.length > limit) {
      throw new FusedError('refused', notOnDevice(`the probe's block (byte ${at}) lies outside the device or its file system (${limit} bytes)`), device.path);
    }
    let seen: Buffer;
    try {
      seen = await device.readInto(alignedBuffer(2 * ALIGN), at, token.length);
    } catch (err) {
      throw new FusedError('refused', notOnDevice(`cannot read the probe's block: ${errorMessage(err)}`), device.path);
    }
    if (!seen.equals(token)) throw new FusedError('refused', notOnDevice(''), device.path);
    return map;
  } finally {
    await session.release(map.lease).catch(() => {});
  }
}
