// ASC MHL v2.0 manifests (the ascmhl/ folder of a copied tree): generations, the chain file, and reading them back.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rename, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { readFileSync, type Dirent } from 'node:fs';
import { FusedError, errnoCode } from '../errors.js';
import { Slots } from './copy.js';
import { StreamHash, type Checksum, type HashType } from './hash.js';
import type { FileReader, ReadReport } from './reader.js';

export const MHL_FOLDER = 'ascmhl';
export const CHAIN_FILE = 'ascmhl_chain.xml';
/** Hash formats the ASC MHL v2.0 schema knows; fusedcp writes xxh64 or md5 of them. */
export const MHL_HASH_FORMATS = ['md5', 'sha1', 'c4', 'xxh32', 'xxh64', 'xxh3', 'xxh128'] as const;

export interface ManifestEntry {
  /** Relative to the manifest's root, '/'-separated, as text. */
  path: string;
  size: number;
  modified: Date;
  checksum: Checksum;
  /** When the bytes were hashed. */
  hashed: Date;
}

export interface Creator { date: Date; host: string; tool: string; version: string }

export interface Generation { sequence: number; file: string; c4: string }

/** Why a name cannot go into an XML 1.0 manifest (not UTF-8, or characters XML cannot carry), or null. */
export function unrecordable(name: Buffer): string | null {
  const text = name.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(name)) return 'its name is not valid UTF-8, which an ASC MHL manifest cannot record';
  // XML 1.0 Char: tab, LF, CR and from 0x20 up, minus the surrogates (already excluded by UTF-8) and FFFE/FFFF.
  if (/[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]/.test(text)) return 'its name holds a control character, which an ASC MHL (XML 1.0) manifest cannot record';
  return null;
}

/** Text for XML content and attributes; tab, LF and CR as references so no parser normalizes them away. */
export function xmlEscape(s: string): string {
  return s.replace(/[&<>"'\t\n\r]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;', '\t': '&#9;', '\n': '&#10;', '\r': '&#13;' })[c]!);
}

export function xmlUnescape(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|amp|lt|gt|quot|apos);/g, (_, e: string) => {
    if (e[0] === '#') return String.fromCodePoint(e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    return ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" } as Record<string, string>)[e]!;
  });
}

/** xs:dateTime in UTC, to the second: 2026-11-28T14:03:07Z. */
export function xmlDate(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

const BASE58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';

/** The C4 ID (SMPTE ST 2114) of some bytes: "c4" and the SHA-512 digest in base58, padded to 90 characters. The
 *  chain file names each generation by it. */
export function c4Id(data: Buffer): string {
  let n = BigInt('0x' + createHash('sha512').update(data).digest('hex'));
  let out = '';
  while (n > 0n) {
    out = BASE58[Number(n % 58n)] + out;
    n /= 58n;
  }
  return 'c4' + out.padStart(88, '1');
}

/** One generation: the files this run hashed, with the creator and the process ("transfer": a copy). */
export function generationXml(creator: Creator, entries: readonly ManifestEntry[], process: 'transfer' | 'in-place' = 'transfer'): string {
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<hashlist version="2.0" xmlns="urn:ASC:MHL:v2.0">',
    '  <creatorinfo>',
    `    <creationdate>${xmlDate(creator.date)}</creationdate>`,
    `    <hostname>${xmlEscape(creator.host)}</hostname>`,
    `    <tool version="${xmlEscape(creator.version)}">${xmlEscape(creator.tool)}</tool>`,
    '  </creatorinfo>',
    '  <processinfo>',
    `    <process>${process}</process>`,
    '    <ignore>',
    `      <pattern>/${MHL_FOLDER}</pattern>`,
    '    </ignore>',
    '  </processinfo>',
  ];
  if (entries.length > 0) {
    lines.push('  <hashes>');
    for (const e of entries) {
      lines.push(
        '    <hash>',
        `      <path size="${e.size}" lastmodificationdate="${xmlDate(e.modified)}">${xmlEscape(e.path)}</path>`,
        `      <${e.checksum.type} action="original" hashdate="${xmlDate(e.hashed)}">${e.checksum.value}</${e.checksum.type}>`,
        '    </hash>',
      );
    }
    lines.push('  </hashes>');
  }
  lines.push('</hashlist>', '');
  return lines.join('\n');
}

export function chainXml(generations: readonly Generation[]): string {
  const lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<ascmhldirectory xmlns="urn:ASC:MHL:DIRECTORY:v2.0">'];
  for (const g of generations) {
    lines.push(`  <hashlist sequencenr="${g.sequence}">`, `    <path>${xmlEscape(g.file)}</path>`, `    <c4>${g.c4}</c4>`, '  </hashlist>');
  }
  lines.push('</ascmhldirectory>', '');
  return lines.join('\n');
}

/** `0001_<root>_<YYYY-MM-DD_HHMMSSZ>.mhl`, the generation file's name. */
export function generationFileName(sequence: number, rootName: string, date: Date): string {
  const iso = date.toISOString();
  const stamp = `${iso.slice(0, 10)}_${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  // The root's name is text in a file name: no separators, nothing XML cannot carry.
  const safe = rootName.replace(/[/\x00-\x1f\x7f]/g, '_') || 'root';
  return `${String(sequence).padStart(4, '0')}_${safe}_${stamp}.mhl`;
}

/** The chain as written (ascmhl_chain.xml), or empty when there is none yet. */
export function parseChain(xml: string): Generation[] {
  const out: Generation[] = [];
  for (const m of xml.matchAll(/<hashlist\b([^>]*)>([\s\S]*?)<\/hashlist>/g)) {
    const seq = /sequencenr\s*=\s*["'](\d+)["']/.exec(m[1]!)?.[1];
    const file = /<path\b[^>]*>([\s\S]*?)<\/path>/.exec(m[2]!)?.[1];
    const c4 = /<c4\b[^>]*>\s*([\s\S]*?)\s*<\/c4>/.exec(m[2]!)?.[1];
    if (seq === undefined || file === undefined || c4 === undefined) throw new FusedError('failure', `${CHAIN_FILE}: a hashlist without sequencenr, path or c4`);
    out.push({ sequence: Number(seq), file: xmlUnescape(file), c4 });
  }
  return out;
}

export interface RecordedHash { path: string; size?: number; type: string; value: string; action?: string }

/** The file hashes of one generation (any hash formats ASC MHL knows; directory hashes are not files). */
export function parseGeneration(xml: string): RecordedHash[] {
  const out: RecordedHash[] = [];
  const formats = MHL_HASH_FORMATS.join('|');
  for (const m of xml.matchAll(/<hash\b[^>]*>([\s\S]*?)<\/hash>/g)) {
    const body = m[1]!;
    const path = /<path\b([^>]*)>([\s\S]*?)<\/path>/.exec(body);
    if (!path) continue;
    const size = /\bsize\s*=\s*["'](\d+)["']/.exec(path[1]!)?.[1];
    for (const h of body.matchAll(new RegExp(`<(${formats})\\b([^>]*)>\\s*([^<]*?)\\s*</\\1>`, 'g'))) {
      const action = /\baction\s*=\s*["']([a-z]+)["']/.exec(h[2]!)?.[1];
      out.push({ path: xmlUnescape(path[2]!), ...(size !== undefined ? { size: Number(size) } : {}), type: h[1]!, value: h[3]!.toLowerCase(), ...(action ? { action } : {}) });
    }
  }
  return out;
}

let toolVersion: string | undefined;

/** This package's version, for the manifest's creator info (dist/X/ and dist/bundle/ are both two levels down). */
export function fusedVersion(): string {
  if (toolVersion === undefined) {
    try {
      toolVersion = String(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version);
    } catch {
      toolVersion = 'unknown';
    }
  }
  return toolVersion;
}

export function creatorNow(tool: string, date = new Date()): Creator {
  return { date, host: hostname(), tool, version: fusedVersion() };
}

/** Write a file whole under its name: a temporary beside it, then rename (a reader never sees half of it). */
async function writeWhole(path: Buffer, data: string | Buffer): Promise<void> {
  const tmp = Buffer.concat([path, Buffer.from(`.fused-${randomBytes(4).toString('hex')}`)]);
  try {
    await writeFile(tmp, data, { flag: 'wx', mode: 0o644 });
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

const join = (dir: Buffer, name: string): Buffer => Buffer.concat([dir, Buffer.from(dir.at(-1) === 0x2f ? name : `/${name}`)]);

/** The chain of the manifest under `root` (empty when there is no ascmhl/ folder or chain yet). */
export async function readChain(root: Buffer): Promise<Generation[]> {
  try {
    return parseChain(await readFile(join(join(root, MHL_FOLDER), CHAIN_FILE), 'utf8'));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw err;
  }
}

/** Add a generation to the manifest under `root` (the copy's destination): its .mhl file, then the chain naming it
 *  by its C4 ID. Returns the generation. */
export async function addGeneration(root: Buffer, rootName: string, creator: Creator, entries: readonly ManifestEntry[]): Promise<Generation> {
  const folder = join(root, MHL_FOLDER);
  await mkdir(folder, { recursive: true });
  const chain = await readChain(root);
  // Numbered after every generation there is, chained or not (a run cut off between its two writes).
  const present = ((await readdir(folder)) as string[]).map((f) => /^(\d{4,})_.*\.mhl$/.exec(f)?.[1]).filter((n): n is string => n !== undefined).map(Number);
  const sequence = Math.max(0, ...chain.map((g) => g.sequence), ...present) + 1;
  const file = generationFileName(sequence, rootName, creator.date);
  const xml = Buffer.from(generationXml(creator, entries));
  await writeWhole(join(folder, file), xml);
  const generation = { sequence, file, c4: c4Id(xml) };
  await writeWhole(join(folder, CHAIN_FILE), chainXml([...chain, generation]));
  return generation;
}

export interface History {
  generations: Generation[];
  /** The latest recorded hash of each path (preferred format first: xxh64, md5, then the rest). */
  files: Map<string, RecordedHash & { generation: number }>;
  /** Generation files whose bytes do not match their C4 ID in the chain, or that are missing. */
  broken: { file: string; reason: string }[];
}

const PREFERENCE = ['xxh64', 'md5', 'sha1', 'xxh128', 'xxh3', 'xxh32', 'c4'];

/** Read the manifest under `root`: the chain, each generation (checked against its C4 ID), each file's latest hash. */
export async function readHistory(root: Buffer): Promise<History> {
  const folder = join(root, MHL_FOLDER);
  const generations = await readChain(root);
  if (generations.length === 0) throw new FusedError('failure', `no ASC MHL manifest here (${MHL_FOLDER}/${CHAIN_FILE})`, root.toString());
  const files = new Map<string, RecordedHash & { generation: number }>();
  const broken: { file: string; reason: string }[] = [];
  for (const g of [...generations].sort((a, b) => a.sequence - b.sequence)) {
    let xml: Buffer;
    try {
      xml = await readFile(join(folder, g.file));
    } catch (err) {
      broken.push({ file: `${MHL_FOLDER}/${g.file}`, reason: errnoCode(err) === 'ENOENT' ? 'missing' : String(err) });
      continue;
    }
    if (c4Id(xml) !== g.c4) {
      broken.push({ file: `${MHL_FOLDER}/${g.file}`, reason: 'changed: its C4 ID differs from the one in the chain' });
      continue;
    }
    const byPath = new Map<string, RecordedHash>();
    for (const h of parseGeneration(xml.toString('utf8'))) {
      const had = byPath.get(h.path);
      if (h.action === 'failed') continue;
      if (!had || PREFERENCE.indexOf(h.type) < PREFERENCE.indexOf(had.type)) byPath.set(h.path, h);
    }
    for (const [p, h] of byPath) files.set(p, { ...h, generation: g.sequence });
  }
  return { generations, files, broken };
}

export type CheckStatus = 'ok' | 'mismatch' | 'missing' | 'new' | 'failed';

export interface CheckResult {
  /** Relative to the root, as recorded (or, for a new file, as found). */
  path: string;
  status: CheckStatus;
  type?: string;
  expected?: string;
  actual?: string;
  /** How the bytes were read (direct, network, mixed). */
  read?: ReadReport;
  error?: unknown;
}

/** Hash formats fusedcp can check (the others are reported as failed: not checkable here). */
const CHECKABLE: readonly string[] = ['xxh64', 'md5'];

/**
 * Check the tree under `root` against its manifest: every file the manifest records is read (through `reader`:
 * direct where the tree is on a fused mount) and hashed in the recorded format; files not there are missing; files
 * the manifest does not know are reported as new. Results by path (ascmhl/ itself excluded).
 */
export async function checkTree(root: Buffer, reader: FileReader, history: History, jobs = 1): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const slots = new Slots(Math.max(1, jobs));
  const pending: Promise<void>[] = [];
  for (const [path, rec] of [...history.files].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const base = { path, type: rec.type, expected: rec.value };
    if (path.startsWith('/') || path.split('/').includes('..')) {
      results.push({ ...base, status: 'failed', error: new FusedError('failure', 'the manifest names a path outside its tree (not read)') });
      continue;
    }
    if (!CHECKABLE.includes(rec.type)) {
      results.push({ ...base, status: 'failed', error: new FusedError('failure', `cannot check ${rec.type} hashes (fusedcp checks ${CHECKABLE.join(', ')})`) });
      continue;
    }
    const { done } = await slots.start(async () => {
      const hash = new StreamHash(rec.type as HashType);
      try {
        const read = await reader.read(join(root, path), {
          write: async (chunk) => hash.update(chunk.data),
          restart: async () => hash.reset(),
        });
        if (read.changed) throw new FusedError('failure', `changed while being read (${read.reason})`);
        const actual = (await hash.digest()).value;
        results.push({ ...base, status: actual === rec.value ? 'ok' : 'mismatch', actual, read });
      } catch (err) {
        hash.close();
        results.push({ ...base, status: errnoCode(err) === 'ENOENT' ? 'missing' : 'failed', ...(errnoCode(err) === 'ENOENT' ? {} : { error: err }) });
      }
    });
    pending.push(done);
  }
  await Promise.all(pending);
  for (const path of await filesUnder(root)) {
    if (!history.files.has(path)) results.push({ path, status: 'new' });
  }
  return results.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** Regular files under `root` (relative, '/'-separated), without the ascmhl/ folder at the top. Names that are
 *  not text are left out: a manifest could not have recorded them. */
async function filesUnder(root: Buffer, rel = ''): Promise<string[]> {
  const out: string[] = [];
  const dir = rel ? join(root, rel) : root;
  const entries = (await readdir(dir, { encoding: 'buffer', withFileTypes: true })) as unknown as Dirent<Buffer>[];
  for (const e of entries) {
    if (unrecordable(e.name)) continue;
    const name = e.name.toString('utf8');
    const path = rel ? `${rel}/${name}` : name;
    if (!rel && name === MHL_FOLDER) continue;
    if (e.isDirectory()) out.push(...(await filesUnder(root, path)));
    else if (e.isFile()) out.push(path);
  }
  return out;
}
