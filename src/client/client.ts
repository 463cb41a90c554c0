// The client side of fused for commands: which fuse a file is under, sessions to map servers, maps.
import { FusedError, describeError, errorMessage } from '../errors.js';
import { validateMap } from '../volume/extents.js';
import { findMount, type MountEntry } from '../volume/mountinfo.js';
import { readMounts } from '../sys/blockdev.js';
import { openSession } from './fuse.js';
import { findFuseFor, loadFuses, type FuseRecord, type FusedFile } from './registry.js';
import type { FileMap, Session } from './session.js';

export class FuseClient {
  private readonly sessions = new Map<string, Promise<Session>>();
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

  /** Ask the server for a file's map, and check it tiles the file before anyone trusts it. */
  async map(file: FusedFile): Promise<{ map: FileMap; session: Session }> {
    const session = await this.session(file.fuse);
    let map: FileMap;
    try {
      map = await session.map(file.fuse.volume, file.rel);
    } catch (err) {
      if (err instanceof FusedError && err.kind === 'unreachable') throw err;
      throw new FusedError('failure', `map server: ${errorMessage(err)}`);
    }
    const problem = validateMap(map.extents, map.size);
    if (problem) {
      await session.release(map.lease).catch(() => {});
      throw new FusedError('failure', `map server sent an invalid map: ${problem}`);
    }
    return { map, session };
  }

  async close(): Promise<void> {
    for (const s of this.sessions.values()) {
      try {
        (await s).close();
      } catch {
        // never opened
      }
    }
    this.sessions.clear();
  }
}
