// The map server's log: one line per event that matters, as text for people or JSON for log collectors
// (the fields are documented in fusedctl(1), LOGGING).
import type { ServerEvent } from './settings.js';

export type LogFormat = 'text' | 'json';
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json'];
export const isLogFormat = (s: string): s is LogFormat => (LOG_FORMATS as readonly string[]).includes(s);

export type LogLevel = 'info' | 'warn' | 'error';

/** What every JSON line carries (null where it does not apply), besides the event's own fields. */
interface LogFields {
  node?: string;
  volume?: string;
  peer?: string;
  [extra: string]: string | number | boolean | undefined;
}

export class ServerLog {
  constructor(
    /** Changed by a reload. */
    public format: LogFormat,
    private readonly write: (line: string) => void = (line) => void process.stderr.write(line),
    private readonly prefix = 'fusedctl',
    private readonly now: () => Date = () => new Date(),
  ) {}

  /** A line of one of the server's own kinds (start, listening, shutdown), or a free-form message. */
  line(msg: string, event = 'message', level: LogLevel = 'info', fields: LogFields = {}): void {
    if (this.format === 'text') {
      this.write(`${this.prefix}: ${msg}\n`);
      return;
    }
    const { node, volume, peer, ...extra } = fields;
    const doc: Record<string, unknown> = {
      time: this.now().toISOString(),
      level,
      event,
      node: node ?? null,
      volume: volume ?? null,
      peer: peer ?? null,
      msg,
    };
    for (const [k, v] of Object.entries(extra)) if (v !== undefined) doc[k] = v;
    this.write(JSON.stringify(doc) + '\n');
  }

  /** A server event; maps and grants are too many to log (the metrics count them). */
  event(e: ServerEvent): void {
    switch (e.event) {
      case 'connect':
        return this.line(`${e.peer}: connected`, e.event, 'info', { peer: e.peer });
      case 'disconnect':
        return this.line(`${e.peer}: disconnected`, e.event, 'info', { peer: e.peer, node: e.node });
      case 'auth':
        return this.line(`${e.peer}: node ${e.node} authenticated (${e.access})`, e.event, 'info', { peer: e.peer, node: e.node, access: e.access });
      case 'authfail':
        return this.line(`${e.peer}: node ${e.node}: authentication failed`, e.event, 'warn', { peer: e.peer, node: e.node });
      case 'refused':
        return this.line(`${e.peer}: ${e.verb ? `${e.verb}: ` : 'refused: '}${e.code} ${e.reason}`, e.event, 'warn', {
          peer: e.peer, node: e.node, volume: e.volume, verb: e.verb, code: e.code, reason: e.reason,
        });
      case 'recall':
        return this.line(`${e.peer}: node ${e.node ?? '(none)'}: recalling lease ${e.lease} (${e.reason})`, e.event, 'info', {
          peer: e.peer, node: e.node, lease: e.lease, reason: e.reason,
        });
      case 'revoke':
        return this.line(`node ${e.node ?? '(none)'}: lease ${e.lease} revoked (not returned after its ${e.after === 'recall' ? 'recall' : 'connection ended'})`, e.event, 'warn', {
          node: e.node, lease: e.lease, after: e.after,
        });
      case 'reload':
        return this.line(`reload: ${e.result}: ${e.reason}`, e.event, e.result === 'ok' ? 'info' : e.result === 'refused' ? 'error' : 'warn', {
          result: e.result, reason: e.reason,
        });
      case 'map':
      case 'grant':
        return;
    }
  }
}
