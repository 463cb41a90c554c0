// fusedmap --svg: where a file's extents lie on the device (and in the file), as an SVG drawing.
import type { ExtentState, MapExtent } from '../volume/extents.js';
import { humanBytes } from './messages.js';

export const STATE_COLOURS: Record<ExtentState, string> = { DATA: '#2b7bb9', ZERO: '#8fc98f', HOLE: '#d9d9d9', NETWORK: '#e08a2c' };

export interface DrawingInput {
  /** Shown as the title (any text; escaped). */
  name: string;
  size: number;
  /** The device's (or file system's) size: the device bar's full width. */
  deviceSize: number;
  /** Where the device size came from, for the caption. */
  deviceLabel: string;
  extents: readonly MapExtent[];
}

const W = 1000;
const LEFT = 20;
const BAR = 40;

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!)
  // Characters XML 1.0 cannot carry at all (file names may hold them).
  .replace(/[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]/g, '\ufffd');

const num = (n: number) => (Math.round(n * 100) / 100).toString();

/** Two bars: the device (each extent with a device address, at its place, at least a pixel wide) and the file
 *  (every extent in file order, holes included), coloured by state, with a legend of bytes per state. */
export function extentSvg(d: DrawingInput): string {
  const scale = d.deviceSize > 0 ? W / d.deviceSize : 0;
  const fileScale = d.size > 0 ? W / d.size : 0;
  const totals: Record<ExtentState, number> = { DATA: 0, ZERO: 0, HOLE: 0, NETWORK: 0 };
  const device: string[] = [];
  const file: string[] = [];
  for (const [i, e] of d.extents.entries()) {
    totals[e.state] += e.length;
    const tip = `<title>extent ${i}: ${e.state}, file offset ${e.logical}, ${e.state === 'HOLE' ? 'no device address' : `device offset ${e.physical}`}, ${e.length} bytes</title>`;
    const fill = STATE_COLOURS[e.state];
    file.push(`<rect x="${num(LEFT + e.logical * fileScale)}" y="150" width="${num(Math.max(1, e.length * fileScale))}" height="${BAR}" fill="${fill}">${tip}</rect>`);
    const placed = e.state === 'DATA' || e.state === 'ZERO' || (e.state === 'NETWORK' && e.physical > 0);
    if (placed && scale > 0) device.push(`<rect x="${num(LEFT + Math.min(W, e.physical * scale))}" y="60" width="${num(Math.max(1, e.length * scale))}" height="${BAR}" fill="${fill}">${tip}</rect>`);
  }
  const states = Object.keys(STATE_COLOURS) as ExtentState[];
  const legend = states.map((s, i) => {
    const x = LEFT + i * 240;
    return `<rect x="${x}" y="215" width="14" height="14" fill="${STATE_COLOURS[s]}"/><text x="${x + 20}" y="227">${s} ${esc(humanBytes(totals[s]))}</text>`;
  });
  const H = 245;
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W + 2 * LEFT}" height="${H}" viewBox="0 0 ${W + 2 * LEFT} ${H}" font-family="sans-serif" font-size="13">`,
    `<title>${esc(`${d.name}: extents on the device`)}</title>`,
    `<text x="${LEFT}" y="22" font-size="15">${esc(d.name)}: ${d.extents.length} extent(s), ${esc(humanBytes(d.size))}</text>`,
    `<text x="${LEFT}" y="52">device, 0 to ${esc(humanBytes(d.deviceSize))} (${esc(d.deviceLabel)})</text>`,
    `<rect x="${LEFT}" y="60" width="${W}" height="${BAR}" fill="#f4f4f4" stroke="#999"/>`,
    `<g id="device">${device.join('')}</g>`,
    `<text x="${LEFT}" y="142">file, 0 to ${esc(humanBytes(d.size))}</text>`,
    `<rect x="${LEFT}" y="150" width="${W}" height="${BAR}" fill="#f4f4f4" stroke="#999"/>`,
    `<g id="file">${file.join('')}</g>`,
    `<g id="legend">${legend.join('')}</g>`,
    '</svg>',
    '',
  ].join('\n');
}
