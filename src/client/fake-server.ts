// Test support: a fake map server speaking protocol 2 on the loopback, for the session and reader unit tests.
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { nodeKey, newChallenge, serverProof } from '../protocol/index.js';
import { Session } from './session.js';

export const MASTER = Buffer.from('fused-unit-test-master-secret');
export const NODE = 'cli';

export interface Fake {
  port: number;
  /** Lines the fake received. */
  got: string[];
  /** Delay before answering PING (ms). */
  pingDelay: number;
  push(line: string): void;
  dropClients(): void;
  close(): Promise<void>;
}

export interface FakeOptions {
  /** The lease time to announce (seconds); null announces none. */
  lease?: number | null;
  /** Prove a key derived from another master secret. */
  wrongProof?: boolean;
  /** The MAP reply's head fields and extent lines for a path (default: an empty file). */
  map?: (path: string, lease: string) => { head: string; extents: string[] };
  /** The GRANT reply line for a request (default: ERR UNKNOWN, as a server from before GRANT answers). */
  grant?: (volume: string, bytes: number, ops: number) => string;
}

/** A fake server: greeting, HELLO, AUTH, PING, MAP, RELEASE/RETURN, GRANT, QUIT. */
export async function fakeServer(opts: FakeOptions = {}): Promise<Fake> {
  const sockets = new Set<net.Socket>();
  const fake: Fake = {
    port: 0,
    got: [],
    pingDelay: 0,
    push: (line) => sockets.forEach((s) => s.write(line + '\n')),
    dropClients: () => sockets.forEach((s) => s.destroy()),
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    const challenge = newChallenge();
    s.write(`FUSED 2 node=srv challenge=${challenge}\n`);
    let buf = '';
    s.on('data', async (d) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        fake.got.push(line);
        const [verb, ...args] = line.split(' ');
        if (verb === 'HELLO') {
          const key = nodeKey(opts.wrongProof ? Buffer.from('some-other-master-secret') : MASTER, args[0]!);
          const proof = serverProof(key, challenge, args[2]!, args[0]!, 'srv');
          const lease = opts.lease === null ? '' : ` lease=${opts.lease ?? 2}`;
          s.write(`OK HELLO node=srv version=2 idle=300${lease} proof=${proof}\n`);
        } else if (verb === 'AUTH') {
          s.write(`OK AUTH node=${NODE} access=ro\n`);
        } else if (verb === 'PING') {
          if (fake.pingDelay) await sleep(fake.pingDelay);
          s.write('OK PONG\n');
        } else if (verb === 'MAP') {
          const lease = `L${fake.got.length}`;
          const m = opts.map?.(args[1]!, lease) ?? { head: 'size=0 blocksize=4096 ino=12 change=12-1 mtime=1.000000001', extents: [] };
          s.write(`OK MAP lease=${lease} ${m.head} extents=${m.extents.length}\n${m.extents.map((e) => `X ${e}\n`).join('')}END\n`);
        } else if (verb === 'RELEASE' || verb === 'RETURN') {
          s.write(`OK ${verb}\n`);
        } else if (verb === 'GRANT') {
          s.write((opts.grant?.(args[0]!, Number(args[1]), Number(args[2])) ?? 'ERR UNKNOWN unknown verb GRANT') + '\n');
        } else if (verb === 'QUIT') {
          s.end('OK BYE\n');
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  fake.port = (server.address() as net.AddressInfo).port;
  return fake;
}

/** A session to the fake, as node cli with the right key. */
export const openFake = (fake: Fake) => Session.open({ host: '127.0.0.1', port: fake.port }, { node: NODE, key: nodeKey(MASTER, NODE) });
