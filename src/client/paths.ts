// Paths as raw bytes (file names need not be UTF-8): joining, last component, parent.

const SLASH = 0x2f;

export function joinBytes(dir: Buffer, name: Buffer): Buffer {
  return dir.at(-1) === SLASH ? Buffer.concat([dir, name]) : Buffer.concat([dir, Buffer.from('/'), name]);
}

/** Last component, ignoring trailing slashes (`a/b/` -> `b`). */
export function baseBytes(p: Buffer): Buffer {
  let end = p.length;
  while (end > 1 && p[end - 1] === SLASH) end--;
  const start = p.lastIndexOf(SLASH, end - 1) + 1;
  return p.subarray(start, end);
}

export function dirBytes(p: Buffer): Buffer {
  let end = p.length;
  while (end > 1 && p[end - 1] === SLASH) end--;
  const i = p.lastIndexOf(SLASH, end - 1);
  return i < 0 ? Buffer.from('.') : i === 0 ? Buffer.from('/') : p.subarray(0, i);
}
