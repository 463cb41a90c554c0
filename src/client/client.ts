// The client side of fused for commands: which fuse a file is under, sessions to map servers, proven devices, maps.
import { FusedError, describeError, errorMessage, reasonOf } from '../errors.js';
import { validateMap } from '../volume/extents.js';
import { findMount, type MountEntry } from '../volume/mountinfo.js';
import { readMounts } from '../sys/blockdev.js';
import { Device } from './device.js';
import { findDeviceByIdentity } from './devices.js';
import { deviceIdentity } from './identity.js';
import { proveDevice } from './proof.js';
import { openSession } from './fuse.js';
import { findFuseFor, fuseOfPath, loadFuses, type FuseRecord, type FusedFile } from './registry.js';
import { baseBytes, dirBytes, joinBytes } from './paths.js';
import { realpath } from 'node:fs/promises';
import type { FileMap, Session } from './session.js';
import type { MapMode } from '../protocol/index.js';

/** The device proven for a session (its path, and the read-only descriptor the proof read it through, kept open for
 *  the session's readers and closed with the client), or why the direct path is refused for that fuse (naming the
 *  device). */
export type ProvenDevice = { path: string; device?: Device } | { reason: string };

export class FuseClient {
  private readonly sessions = new Map<string, Promise<Session>>();
  private readonly proofs = new WeakMap<Session, Map<string, Promise<ProvenDevice>>>();
  /** Proofs under way: close() lets them end (map released, probe removed) before the sessions go. */
  private readonly proving = new Set<Promise<unknown>>();
  /** Each fuse's device, found by its identity and opened (its UUID checked), before and apart from any proof, so
   *  that opening it overlaps the session's start: one per fuse for the command, closed by close(). */
  private readonly devices = new Map<string, Promise<Device>>();
  /** The fuses' devices opened for writing, by mountpoint and path (see writableDevice). */
  private readonly writable = new Map<string, Promise<Device>>();
  private mounts: Promise<MountEntry[]> | undefined;

  private constructor(readonly fuses: FuseRecord[]) {}

  static async load(): Promise<FuseClient> {
    return new FuseClient(await loadFuses());
  }

  /** The fuse a file is under, or undefined (then the file is not on a fused mount). */
  async resolve(file: Buffer): Promise<FusedFile | undefined> {
    let found: FusedFile | undefined;
    try {
      found = await findFuseFor(file, this.fuses);
    } catch (err) {
      throw new FusedError('failure', describeError(err));
    }
    if (found) await this.checkMount(found.fuse);
    return found;
  }

  /** The network mount at a fuse's mount point must still be the one that was fused (not unmounted, not
   *  replaced by another): else a local file of the same name would be paired with the server's map. */
  private async checkMount(fuse: FuseRecord): Promise<void> {
    if (fuse.mountFstype === undefined) return; // recorded before this check existed
    this.mounts ??= readMounts();
    const now = findMount(await this.mounts, fuse.mountpoint);
    if (!now || now.mountPoint !== fuse.mountpoint || now.fstype !== fuse.mountFstype || now.source !== fuse.mountSource) {
      const seen = now && now.mountPoint === fuse.mountpoint ? `${now.fstype} ${now.source}` : 'no mount';
      throw new FusedError('failure', `${fuse.mountpoint} is not the mount that was fused (${fuse.mountFstype} ${fuse.mountSource}; now ${seen})`);
    }
  }

  /** One authenticated session per server, opened on first use. */
  session(fuse: FuseRecord): Promise<Session> {
    const key = `${fuse.server}\0${fuse.keyFile}\0${fuse.node}`;
    let s = this.sessions.get(key);
    if (!s) {
      s = openSession(fuse.server, fuse.keyFile, fuse.node);
      this.sessions.set(key, s);
      s.catch(() => this.sessions.delete(key));
    }
    return s.then((session) => {
      if (!session.isClosed) return session;
      this.sessions.delete(key);
      return this.session(fuse);
    });
  }

  /**
   * The device a fuse's direct bytes may come from in this session, or why none may: the recorded path while it
   * still has the recorded identity, else the device that has it; then proven by its content (rule 7). Once per
   * session and fuse; a refusal is kept too, so every file of that fuse goes through the network with the reason.
   */
  device(fuse: FuseRecord, session: Session): Promise<ProvenDevice> {
    let perFuse = this.proofs.get(session);
    if (!perFuse) this.proofs.set(session, (perFuse = new Map()));
    let proof = perFuse.get(fuse.mountpoint);
    if (!proof) {
      // The PROBE goes out while the device is still being opened.
      proof = proveDevice(session, fuse.volume, this.openDevice(fuse))
        .then((device) => ({ path: device.path, device }))
        .catch((err: unknown) => ({ reason: reasonOf(err) }));
      perFuse.set(fuse.mountpoint, proof);
      const settled = proof.finally(() => this.proving.delete(settled));
      this.proving.add(settled);
    }
    return proof;
  }

  /** Warm (below) the fuse a file about to be created as `file` would be under: its directory resolved, no check
   *  of the mount (the write itself does that). Errors are left for the write to meet. */
  warmFor(file: Buffer): void {
    realpath(dirBytes(file), { encoding: 'buffer' })
      .then((dir) => {
        const found = fuseOfPath(Buffer.concat([dir as Buffer, Buffer.from('/'), baseBytes(file)]), this.fuses);
        if (found && found.fuse.access !== 'ro') this.warm(found.fuse);
      })
      .catch(() => {});
  }

  /** Warm the fuse a file's path names as written (before its symlinks are resolved by resolve()): right unless a
   *  symlink leads out of or into a mount, and a wrong guess costs one unused session and proof. */
  warmPath(file: Buffer): void {
    const abs = file[0] === 0x2f ? file : joinBytes(Buffer.from(process.cwd()), file);
    const found = fuseOfPath(abs, this.fuses);
    if (found) this.warm(found.fuse);
  }

  /** Start the session to a fuse's server and the proof of its device now, so that they overlap other work (a
   *  later map() uses them); failures wait for map() to report them. */
  warm(fuse: FuseRecord): void {
    this.openDevice(fuse).catch(() => {});
    this.session(fuse).then((session) => this.device(fuse, session)).catch(() => {});
  }

  /** Ask the server for a file's map (read, or write: one writer under a write lease), and check it tiles the file
   *  before anyone trusts it. With the map, the proof of the device for this session: its outcome (the device, or
   *  why there is none) may come after the map. */
  async map(file: FusedFile, mode: MapMode = 'read'): Promise<{ map: FileMap; session: Session; device: Promise<ProvenDevice> }> {
    const session = await this.session(file.fuse);
    // The map is asked for while the device is being proven, a write map too: no device byte is read or written,
    // and no ALLOC made, before the proof has passed (the reader and the writer wait for `device`), and a write map
    // whose proof fails is given back at once, having held the file up for the proof's few milliseconds.
    const proving = this.device(file.fuse, session);
    let map: FileMap;
    try {
      map = await session.map(file.fuse.volume, file.rel, mode);
    } catch (err) {
      if (err instanceof FusedError && err.kind === 'unreachable') throw err;
      throw new FusedError('failure', `map server: ${errorMessage(err)}`);
    }
    const problem = validateMap(map.extents, map.size);
    if (problem) {
      await session.release(map.lease).catch(() => {});
      throw new FusedError('failure', `map server sent an invalid ${mode} map: ${problem}`);
    }
    return { map, session, device: proving };
  }

  async close(): Promise<void> {
    // A command that needed no device (fusedmap, a file through the mount) may end while its proof goes on: a map
    // of the probe still held at QUIT would be kept by the server for a whole lease time (as any map whose
    // connection ends). The proof is a few requests and one 4 KiB read from its end; waited for, boundedly.
    if (this.proving.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.allSettled([...this.proving]), new Promise((r) => (timer = setTimeout(r, PROOF_DRAIN_MS)))]);
      clearTimeout(timer);
    }
    for (const s of this.sessions.values()) {
      try {
        (await s).close();
      } catch {
        // never opened
      }
    }
    this.sessions.clear();
    const devices = [...this.devices.values(), ...this.writable.values()];
    this.devices.clear();
    this.writable.clear();
    for (const d of devices) await d.then((device) => device.close(), () => {});
  }

  /** The fuse's device at `path` (the one a proof in this command trusted) opened for writing (O_DIRECT, its UUID
   *  checked), once per command: each direct write borrows it, and close() closes it. An open that fails is tried
   *  again for the next file. */
  writableDevice(fuse: FuseRecord, path: string): Promise<Device> {
    const key = `${fuse.mountpoint}\0${path}`;
    let d = this.writable.get(key);
    if (!d) {
      const opening = Device.open(path, fuse.uuid, { write: true });
      this.writable.set(key, opening);
      opening.catch(() => {
        if (this.writable.get(key) === opening) this.writable.delete(key);
      });
      d = opening;
    }
    return d.then((device) => device.borrow());
  }

  /** The fuse's device, opened once (unproven: only a proof in a session makes it trusted). */
  private openDevice(fuse: FuseRecord): Promise<Device> {
    let d = this.devices.get(fuse.mountpoint);
    if (!d) {
      d = findFuseDevice(fuse).then((path) => Device.open(path, fuse.uuid));
      this.devices.set(fuse.mountpoint, d);
    }
    return d;
  }
}

/** How long close() waits for proofs under way. */
const PROOF_DRAIN_MS = 2000;

/** The fuse's device: the recorded path while it has the recorded identity, else the device that has it. Throws
 *  with the reason when none has. */
async function findFuseDevice(fuse: FuseRecord): Promise<string> {
  let path = fuse.device;
  if (fuse.deviceId) {
    const now = await deviceIdentity(fuse.device);
    if (now !== fuse.deviceId) {
      const found = await findDeviceByIdentity(fuse.deviceId, fuse.device);
      if (!found) {
        throw new FusedError('refused', `is no longer the fused device (identity ${now ?? 'none'}, fused as ${fuse.deviceId}) and no unmounted local device has that identity`, fuse.device);
      }
      path = found;
    }
  }
  return path;
}

