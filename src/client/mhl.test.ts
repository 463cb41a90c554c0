// Unit tests for ASC MHL manifests: C4 IDs, escaping, generations and the chain (checked against the ASC's XSDs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  addGeneration, c4Id, chainXml, generationFileName, generationXml, parseChain, parseGeneration, readHistory, unrecordable,
  xmlEscape, xmlUnescape, type ManifestEntry,
} from './mhl.js';

const XSD = fileURLToPath(new URL('../../test/fixtures/ascmhl/', import.meta.url));
const hasXmllint = spawnSync('xmllint', ['--version']).status === 0;

function validates(file: string, schema: string): void {
  const r = spawnSync('xmllint', ['--noout', '--schema', join(XSD, schema), file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

const when = new Date('2026-11-28T14:03:07.456Z');
const entry = (path: string, value: string): ManifestEntry => ({ path, size: 3, modified: when, hashed: when, checksum: { type: 'xxh64', value } });

test('C4 IDs of the SMPTE ST 2114 examples', () => {
  assert.equal(c4Id(Buffer.from('')), 'c459dsjfscH38cYeXXYogktxf4Cd9ibshE3BHUo6a58hBXmRQdZrAkZzsWcbWtDg5oQstpDuni4Hirj75GEmTc1sFT');
  assert.equal(c4Id(Buffer.from('foo')).length, 90);
  assert.match(c4Id(Buffer.from('foo')), /^c4[1-9A-HJ-NP-Za-km-z]{88}$/);
});

test('names survive the XML: escaped, read back the same; names XML cannot carry are refused', () => {
  const odd = `a&b <c> "d" 'e'\tf\ng\rh é 日本`;
  assert.equal(xmlUnescape(xmlEscape(odd)), odd);
  const [h] = parseGeneration(generationXml({ date: when, host: 'h', tool: 't', version: '1' }, [entry(odd, '0123456789abcdef')]));
  assert.deepEqual(h, { path: odd, size: 3, type: 'xxh64', value: '0123456789abcdef', action: 'original' });
  assert.equal(unrecordable(Buffer.from(odd)), null);
  assert.match(unrecordable(Buffer.from([0x61, 0xff, 0x62]))!, /not valid UTF-8/);
  assert.match(unrecordable(Buffer.from('a\x01b'))!, /control character/);
});

test('generation file names: number, root, UTC time', () => {
  assert.equal(generationFileName(1, 'A002R2EC', when), '0001_A002R2EC_2026-11-28_140307Z.mhl');
  assert.equal(generationFileName(12, 'a/b\nc', when), '0012_a_b_c_2026-11-28_140307Z.mhl');
});

test('the chain reads back as written', () => {
  const gens = [{ sequence: 1, file: '0001_x_2026-11-28_140307Z.mhl', c4: c4Id(Buffer.from('1')) }, { sequence: 2, file: '0002_x & y.mhl', c4: c4Id(Buffer.from('2')) }];
  assert.deepEqual(parseChain(chainXml(gens)), gens);
});

test('two generations: numbered, chained by C4 ID, valid against the ASC MHL v2.0 XSDs; a changed one is found', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'fused-mhl-'));
  try {
    const creator = { date: when, host: 'node1', tool: 'fusedcp', version: '0.1.0' };
    const g1 = await addGeneration(Buffer.from(root), 'card', creator, [entry('A001/clip & <1>.mov', '00000000000000aa'), entry('b.txt', '00000000000000bb')]);
    const g2 = await addGeneration(Buffer.from(root), 'card', { ...creator, date: new Date(when.getTime() + 1000) }, [entry('b.txt', '00000000000000cc')]);
    assert.equal(g1.sequence, 1);
    assert.equal(g2.sequence, 2);
    assert.deepEqual((await readdir(join(root, 'ascmhl'))).sort(), ['0001_card_2026-11-28_140307Z.mhl', '0002_card_2026-11-28_140308Z.mhl', 'ascmhl_chain.xml']);
    assert.equal(c4Id(await readFile(join(root, 'ascmhl', g2.file))), g2.c4);
    const history = await readHistory(Buffer.from(root));
    assert.deepEqual(history.broken, []);
    assert.equal(history.files.get('A001/clip & <1>.mov')?.value, '00000000000000aa');
    assert.equal(history.files.get('b.txt')?.value, '00000000000000cc', 'the latest generation wins');
    assert.equal(history.files.get('b.txt')?.generation, 2);
    if (hasXmllint) {
      validates(join(root, 'ascmhl', g1.file), 'ASCMHL.xsd');
      validates(join(root, 'ascmhl', g2.file), 'ASCMHL.xsd');
      validates(join(root, 'ascmhl', 'ascmhl_chain.xml'), 'ASCMHLDirectory.xsd');
    } else t.diagnostic('xmllint missing: schema validation skipped');
    await writeFile(join(root, 'ascmhl', g1.file), (await readFile(join(root, 'ascmhl', g1.file), 'utf8')).replace('00000000000000aa', '00000000000000ab'));
    const again = await readHistory(Buffer.from(root));
    assert.deepEqual(again.broken.map((b) => b.file), [`ascmhl/${g1.file}`]);
    assert.equal(again.files.get('A001/clip & <1>.mov'), undefined, 'a changed generation is not trusted');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
