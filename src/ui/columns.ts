// Output columns declared once: they drive the table, --output, --noheadings and --json alike.
import Table from 'cli-table3';
import { FusedError } from '../errors.js';

export interface Column<R> {
  id: string;
  header: string;
  help: string;
  align: 'left' | 'right';
  text: (row: R) => string;
  json: (row: R) => unknown;
}

/** Pick columns by a comma-separated list of ids (case-insensitive), or all of them. */
export function selectColumns<R>(all: readonly Column<R>[], spec?: string): Column<R>[] {
  if (!spec) return [...all];
  return spec.split(',').map((name) => {
    const col = all.find((c) => c.id.toLowerCase() === name.trim().toLowerCase());
    if (!col) throw new FusedError('usage', `unknown column (known: ${all.map((c) => c.id).join(', ')})`, name);
    return col;
  });
}

export function renderTable<R>(columns: readonly Column<R>[], rows: readonly R[], opts: { headings?: boolean } = {}): string {
  const table = new Table({
    chars: {
      top: '', 'top-mid': '', 'top-left': '', 'top-right': '', bottom: '', 'bottom-mid': '', 'bottom-left': '',
      'bottom-right': '', left: '', 'left-mid': '', mid: '', 'mid-mid': '', right: '', 'right-mid': '', middle: '  ',
    },
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
    colAligns: columns.map((c) => c.align),
    ...(opts.headings === false ? {} : { head: columns.map((c) => c.header) }),
  });
  for (const r of rows) table.push(columns.map((c) => c.text(r)));
  return rows.length || opts.headings !== false ? table.toString().replace(/[ \t]+$/gm, '') : '';
}

export function rowsToJson<R>(columns: readonly Column<R>[], rows: readonly R[]): Record<string, unknown>[] {
  return rows.map((r) => Object.fromEntries(columns.map((c) => [c.id, c.json(r)])));
}

export function columnsHelp<R>(columns: readonly Column<R>[]): string {
  return columns.map((c) => `  ${c.id.padEnd(10)} ${c.help}`).join('\n');
}
