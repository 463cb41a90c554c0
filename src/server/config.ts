// The map server's configuration file, fused.conf(5): `key = value` lines, then `[volume NAME]` and `[node NAME]`
// sections. This reads the syntax and knows the keys; the values are checked where the command-line options are.
import { readFileSync } from 'node:fs';
import { FusedError, describeError } from '../errors.js';
import { isNodeName, isVolumeName } from '../protocol/index.js';

/** Keys before the first section: each is also a `fusedctl serve` option of the same name. */
export const GLOBAL_KEYS = [
  'listen',
  'node',
  'secret-file',
  'default-role',
  'max-connections',
  'max-unauthenticated',
  'idle-timeout',
  'max-extents',
  'max-leases',
  'lease-time',
  'reserve',
  'state-dir',
  'metrics',
  'log-format',
] as const;
export type GlobalKey = (typeof GLOBAL_KEYS)[number];

const SECTION_KEYS = { volume: ['path'], node: ['role'] } as const;
type SectionKind = keyof typeof SECTION_KEYS;

/** A value and the line it is on (1-based), for messages that say where. */
export interface ConfigValue {
  value: string;
  line: number;
}

export interface ConfigFile {
  file: string;
  global: Map<GlobalKey, ConfigValue>;
  /** [volume NAME] path = DIR, in file order. */
  volumes: Map<string, ConfigValue>;
  /** [node NAME] role = ro|rw|admin. */
  nodes: Map<string, ConfigValue>;
}

/** The place of a value in the file, as error messages name it: FILE:LINE. */
export const where = (file: string, line: number) => `${file}:${line}`;

const isGlobalKey = (k: string): k is GlobalKey => (GLOBAL_KEYS as readonly string[]).includes(k);

/** Parse a configuration; the first mistake throws a usage error naming FILE:LINE and the reason. */
export function parseConfig(text: string, file: string): ConfigFile {
  const cfg: ConfigFile = { file, global: new Map(), volumes: new Map(), nodes: new Map() };
  const bad = (line: number, reason: string) => new FusedError('usage', reason, where(file, line));
  let section: { kind: SectionKind; name: string; line: number; keys: Map<string, ConfigValue> } | undefined;
  const close = () => {
    if (!section) return;
    const [key] = SECTION_KEYS[section.kind];
    const v = section.keys.get(key);
    if (!v) throw bad(section.line, `[${section.kind} ${section.name}] has no '${key} =' line`);
    (section.kind === 'volume' ? cfg.volumes : cfg.nodes).set(section.name, v);
  };
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  lines.forEach((raw, i) => {
    const n = i + 1;
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return;
    if (line.includes('\0')) throw bad(n, 'NUL byte in the line');
    if (line.startsWith('[')) {
      const m = /^\[\s*(\S+)\s+(\S+)\s*\]$/.exec(line);
      if (!m) throw bad(n, `expected [volume NAME] or [node NAME], got '${line}'`);
      const kind = m[1]!;
      const name = m[2]!;
      if (kind !== 'volume' && kind !== 'node') throw bad(n, `unknown section '${kind}' (volume or node)`);
      if (kind === 'volume' && !isVolumeName(name)) throw bad(n, `volume names are 1-64 of [A-Za-z0-9._-], got '${name}'`);
      if (kind === 'node' && !isNodeName(name)) throw bad(n, `node names are 1-64 of [A-Za-z0-9._-], got '${name}'`);
      close();
      if ((kind === 'volume' ? cfg.volumes : cfg.nodes).has(name)) throw bad(n, `[${kind} ${name}] appears twice`);
      section = { kind, name, line: n, keys: new Map() };
      return;
    }
    const eq = line.indexOf('=');
    if (eq < 0) throw bad(n, `expected 'key = value', got '${line}'`);
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    if (!/^[a-z][a-z-]*$/.test(key)) throw bad(n, `expected 'key = value', got '${line}'`);
    if (value === '') throw bad(n, `${key}: no value`);
    if (section) {
      if (!(SECTION_KEYS[section.kind] as readonly string[]).includes(key)) {
        const hint = isGlobalKey(key) ? ' (settings of the server go before the first section)' : '';
        throw bad(n, `unknown key '${key}' in [${section.kind} ${section.name}]${hint}`);
      }
      if (section.keys.has(key)) throw bad(n, `${key}: given twice in [${section.kind} ${section.name}] (first on line ${section.keys.get(key)!.line})`);
      section.keys.set(key, { value, line: n });
      return;
    }
    if (!isGlobalKey(key)) throw bad(n, `unknown key '${key}'`);
    if (cfg.global.has(key)) throw bad(n, `${key}: given twice (first on line ${cfg.global.get(key)!.line})`);
    cfg.global.set(key, { value, line: n });
  });
  close();
  return cfg;
}

/** Read and parse FILE; an unreadable file is a usage error naming it. */
export function readConfig(file: string, read: (f: string) => string = (f) => readFileSync(f, 'utf8')): ConfigFile {
  let text: string;
  try {
    text = read(file);
  } catch (err) {
    throw new FusedError('usage', describeError(err), file);
  }
  return parseConfig(text, file);
}
