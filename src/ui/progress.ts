// Progress on stderr, only on a terminal: bytes, rate, ETA (ora spinner).
import type { Ora } from 'ora';
import { colorWanted } from './color.js';
import { humanBytes } from './messages.js';

export class Progress {
  private spinner: Ora | undefined;
  private t0 = performance.now();
  private last = 0;

  private constructor(private readonly totalBytes: number) {}

  /** A progress display, or a silent one when it is not wanted or stderr is not a usable terminal. */
  static async create(enabled: boolean, totalBytes: number): Promise<Progress> {
    const p = new Progress(totalBytes);
    // A terminal that reports no width (a pty without a size) would make ora clear lines forever.
    if (enabled && process.stderr.isTTY && (process.stderr.columns ?? 0) >= 20) {
      // Loaded only when shown: it costs start-up time every other run would pay for nothing.
      const { default: ora } = await import('ora');
      // isEnabled: the decision is ours (a terminal, --no-progress); ora would also turn itself off under CI=.
      // NO_COLOR: the spinner still turns, uncoloured (ora's chalk does not read NO_COLOR itself).
      p.spinner = ora({ stream: process.stderr, discardStdin: false, isEnabled: true, color: colorWanted() ? 'cyan' : false }).start();
    }
    return p;
  }

  update(doneBytes: number, label: string): void {
    if (!this.spinner) return;
    const now = performance.now();
    if (now - this.last < 200) return;
    this.last = now;
    const secs = (now - this.t0) / 1000;
    const rate = secs > 0 ? doneBytes / secs : 0;
    const eta = rate > 0 && this.totalBytes > doneBytes ? `, ETA ${Math.ceil((this.totalBytes - doneBytes) / rate)} s` : '';
    const figures = `  ${humanBytes(doneBytes)} / ${humanBytes(this.totalBytes)}  ${humanBytes(rate)}/s${eta}`;
    // One line only: the file name gives way to the figures.
    const room = Math.max(8, (process.stderr.columns ?? 80) - figures.length - 4);
    this.spinner.text = (label.length > room ? '…' + label.slice(-(room - 1)) : label) + figures;
    // Draw now: ora's own timer may not tick before a fast copy ends.
    this.spinner.render();
  }

  /** Clear the line before other stderr output, then keep going. */
  around(print: () => void): void {
    if (!this.spinner) return print();
    this.spinner.clear();
    print();
    this.spinner.render();
  }

  stop(): void {
    this.spinner?.stop();
  }
}
