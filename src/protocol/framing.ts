// Splits a byte stream into protocol lines, enforcing the line length limit and the printable-ASCII rule.

import { LIMITS, ProtocolError } from './constants.js';

export type FrameEvent = { line: string } | { error: ProtocolError };

const LF = 0x0a;
const CR = 0x0d;

/** Returns the offset of the first byte outside 0x20-0x7E, or -1. */
function firstBadByte(b: Buffer): number {
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c < 0x20 || c > 0x7e) return i;
  }
  return -1;
}

/**
 * Feed raw socket chunks; get complete lines (without CR LF) or framing errors, in stream order.
 * An over-long line is discarded up to its LF and yields one TOOLONG when that LF arrives, so replies stay
 * in request order; it is never buffered. A line with a bad byte yields BADLINE. Either way the stream goes on.
 */
export class LineFramer {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private discarding = false;

  constructor(private readonly maxLineBytes: number = LIMITS.maxLineBytes) {
    if (!Number.isSafeInteger(maxLineBytes) || maxLineBytes < 2) throw new RangeError('maxLineBytes must be >= 2');
  }

  /** Bytes held for an unfinished line (0 while discarding an over-long one). */
  get buffered(): number {
    return this.pendingBytes;
  }

  push(chunk: Buffer): FrameEvent[] {
    const events: FrameEvent[] = [];
    let start = 0;
    while (start < chunk.length) {
      const lf = chunk.indexOf(LF, start);
      if (lf === -1) {
        this.hold(chunk.subarray(start));
        break;
      }
      const piece = chunk.subarray(start, lf);
      start = lf + 1;
      if (this.discarding || this.pendingBytes + piece.length + 1 > this.maxLineBytes) {
        this.discarding = false;
        this.clear();
        events.push({ error: this.tooLong() });
        continue;
      }
      const line = this.pendingBytes === 0 ? piece : Buffer.concat([...this.pending, piece]);
      this.clear();
      events.push(this.check(line));
    }
    return events;
  }

  private hold(rest: Buffer): void {
    if (this.discarding) return;
    // No LF yet: if even the LF can no longer fit, drop everything until it comes.
    if (this.pendingBytes + rest.length + 1 > this.maxLineBytes) {
      this.discarding = true;
      this.clear();
      return;
    }
    // Copy: the caller may reuse its chunk after push returns.
    this.pending.push(Buffer.from(rest));
    this.pendingBytes += rest.length;
  }

  private clear(): void {
    this.pending = [];
    this.pendingBytes = 0;
  }

  private tooLong(): ProtocolError {
    return new ProtocolError('TOOLONG', `line longer than ${this.maxLineBytes} bytes`);
  }

  private check(raw: Buffer): FrameEvent {
    const body = raw.length > 0 && raw[raw.length - 1] === CR ? raw.subarray(0, raw.length - 1) : raw;
    const bad = firstBadByte(body);
    if (bad >= 0) {
      const hex = body[bad]!.toString(16).padStart(2, '0');
      return { error: new ProtocolError('BADLINE', `byte 0x${hex} at offset ${bad} is not printable ASCII`) };
    }
    return { line: body.toString('latin1') };
  }
}
