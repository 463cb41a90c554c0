// Unit tests for fused.conf(5): the syntax, the mistakes named by FILE:LINE, and the command line over the file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FusedError } from '../errors.js';
import { parseConfig, readConfig } from '../server/config.js';
import { SERVE_DEFAULTS, resolveServe } from './serve-config.js';

const SAMPLE = `# a server
listen = 10.0.0.1:7447
lease-time = 20
log-format = json
metrics = 127.0.0.1:9447
max-leases=100

[volume media]
path = /srv/media   

[node edit1]
role = rw
; a comment
[node admin1]
role = admin
[volume scratch]
path = /srv/scratch dir
`;

/** The usage error parseConfig throws for TEXT: its subject (FILE:LINE) and message. */
function mistake(text: string): { where: string | undefined; message: string } {
  try {
    parseConfig(text, 'fused.conf');
  } catch (err) {
    assert.ok(err instanceof FusedError);
    assert.equal(err.kind, 'usage');
    return { where: err.subject, message: err.message };
  }
  assert.fail(`no error for ${JSON.stringify(text)}`);
}

test('sections, keys, comments and blanks; values trimmed, inner spaces kept', () => {
  const c = parseConfig(SAMPLE, '/etc/fused/fused.conf');
  assert.deepEqual([...c.global.keys()], ['listen', 'lease-time', 'log-format', 'metrics', 'max-leases']);
  assert.deepEqual(c.global.get('max-leases'), { value: '100', line: 6 });
  assert.deepEqual([...c.volumes].map(([n, v]) => [n, v.value, v.line]), [['media', '/srv/media', 9], ['scratch', '/srv/scratch dir', 17]]);
  assert.deepEqual([...c.nodes].map(([n, v]) => [n, v.value]), [['edit1', 'rw'], ['admin1', 'admin']]);
});

test('CRLF line ends and an empty file are fine', () => {
  const c = parseConfig('listen = a:1\r\n[volume v]\r\npath = /x\r\n', 'f');
  assert.equal(c.global.get('listen')?.value, 'a:1');
  assert.equal(c.volumes.get('v')?.value, '/x');
  assert.equal(parseConfig('', 'f').global.size, 0);
});

test('each mistake names FILE:LINE and the reason', () => {
  assert.deepEqual(mistake('listen = a:1\nlisten = b:2\n'), { where: 'fused.conf:2', message: 'listen: given twice (first on line 1)' });
  assert.deepEqual(mistake('\n\nbogus = 1\n'), { where: 'fused.conf:3', message: "unknown key 'bogus'" });
  assert.deepEqual(mistake('lease-time\n'), { where: 'fused.conf:1', message: "expected 'key = value', got 'lease-time'" });
  assert.deepEqual(mistake('reserve =\n'), { where: 'fused.conf:1', message: 'reserve: no value' });
  assert.deepEqual(mistake('[share x]\n'), { where: 'fused.conf:1', message: "unknown section 'share' (volume or node)" });
  assert.deepEqual(mistake('[volume]\n'), { where: 'fused.conf:1', message: "expected [volume NAME] or [node NAME], got '[volume]'" });
  assert.deepEqual(mistake('[volume a/b]\npath = /x\n'), { where: 'fused.conf:1', message: "volume names are 1-64 of [A-Za-z0-9._-], got 'a/b'" });
  assert.deepEqual(mistake('[volume v]\npath = /x\n[volume v]\npath = /y\n'), { where: 'fused.conf:3', message: '[volume v] appears twice' });
  assert.deepEqual(mistake('[volume v]\n\n[node n]\nrole = rw\n'), { where: 'fused.conf:1', message: "[volume v] has no 'path =' line" });
  assert.deepEqual(mistake('[node n]\nrole = rw\n[volume v]\n'), { where: 'fused.conf:3', message: "[volume v] has no 'path =' line" });
  assert.deepEqual(mistake('[volume v]\npath = /x\nlisten = a:1\n'), {
    where: 'fused.conf:3',
    message: "unknown key 'listen' in [volume v] (settings of the server go before the first section)",
  });
  assert.deepEqual(mistake('[node n]\nrole = rw\nrole = ro\n'), { where: 'fused.conf:3', message: 'role: given twice in [node n] (first on line 2)' });
});

test('an unreadable file is a usage error naming it', () => {
  assert.throws(
    () => readConfig('/nonexistent/fused.conf', () => { throw Object.assign(new Error("ENOENT: no such file or directory, open '/nonexistent/fused.conf'"), { code: 'ENOENT' }); }),
    (err: unknown) => err instanceof FusedError && err.kind === 'usage' && err.subject === '/nonexistent/fused.conf' && /no such file/.test(err.message),
  );
});

test('values: the command line over the file over the defaults', () => {
  const file = parseConfig(SAMPLE, 'f.conf');
  const cfg = resolveServe({ given: { 'lease-time': '30' }, volumes: ['scratch=/mnt/other', 'extra=/mnt/extra'], roles: ['edit1=ro'] }, file);
  assert.deepEqual(cfg.listen, { host: '10.0.0.1', port: 7447 });
  assert.equal(cfg.leaseTimeMs, 30_000);
  assert.equal(cfg.maxLeasesPerConnection, 100);
  assert.equal(cfg.logFormat, 'json');
  assert.deepEqual(cfg.metrics, { host: '127.0.0.1', port: 9447 });
  assert.equal(cfg.stateDir, SERVE_DEFAULTS['state-dir']);
  assert.deepEqual(Object.fromEntries(cfg.roles), { edit1: 'ro', admin1: 'admin' });
  assert.deepEqual(cfg.volumes.map((v) => [v.name, v.dir, v.where]), [
    ['media', '/srv/media', 'f.conf:9'],
    ['scratch', '/mnt/other', '--volume scratch=/mnt/other'],
    ['extra', '/mnt/extra', '--volume extra=/mnt/extra'],
  ]);
  // Without a file: the defaults, no metrics endpoint, text logs.
  const bare = resolveServe({ given: {}, volumes: ['v=/x'], roles: [] });
  assert.equal(bare.metrics, undefined);
  assert.equal(bare.logFormat, 'text');
  assert.equal(bare.defaultRole, 'ro');
});

test('a bad value names FILE:LINE and the key when it is from the file, the option when from the command line', () => {
  const file = parseConfig('lease-time = soon\n[volume v]\npath = /x\n[node n]\nrole = god\n', 'f.conf');
  assert.throws(() => resolveServe({ given: {}, volumes: [], roles: [] }, file), { subject: 'f.conf:1', message: "lease-time: expected a whole number, got 'soon'" });
  assert.throws(() => resolveServe({ given: { 'lease-time': '10' }, volumes: [], roles: [] }, file), { subject: 'f.conf:5', message: "role: expected ro|rw|admin, got 'god'" });
  const ok = parseConfig('log-format = yaml\n[volume v]\npath = /x\n', 'f.conf');
  assert.throws(() => resolveServe({ given: {}, volumes: [], roles: [] }, ok), { subject: 'f.conf:1', message: "log-format: expected text or json, got 'yaml'" });
  assert.throws(() => resolveServe({ given: { 'log-format': 'xml' }, volumes: [], roles: [] }, ok), { subject: '--log-format' });
  assert.throws(() => resolveServe({ given: {}, volumes: [], roles: [] }), /no volume to serve/);
});
