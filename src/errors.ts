// Typed errors thrown by the core; only the CLI layer turns them into messages and exit codes.

/** What went wrong, in the terms the exit codes speak (see EXIT STATUS in the man pages). */
export type ErrorKind = 'failure' | 'usage' | 'mismatch' | 'partial' | 'refused' | 'unreachable';

export const EXIT_CODES: Record<ErrorKind | 'ok', number> = {
  ok: 0,
  failure: 1,
  usage: 2,
  mismatch: 3,
  partial: 4,
  refused: 5,
  unreachable: 6,
};

export class FusedError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    /** The thing the error is about (a file, a device, a server); printed before the reason. */
    readonly subject?: string,
  ) {
    super(message);
    this.name = 'FusedError';
  }
}

/** errno-style code of a Node or native error, if any. */
export function errnoCode(err: unknown): string | undefined {
  if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'string') {
    return (err as { code: string }).code;
  }
  return undefined;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A system error as people read it: "no such file or directory", without the code and the syscall. */
export function describeError(err: unknown): string {
  const msg = errorMessage(err);
  const code = errnoCode(err);
  if (!code) return msg;
  if (code === 'EISDIR') return 'is a directory';
  const bare = msg.replace(/^E[A-Z0-9]+: /, '').replace(/, \w+(\([^)]*\))?( '.*')?$/s, '');
  return bare.charAt(0).toLowerCase() + bare.slice(1);
}

/** An error as the reason part of `CMD: FILE: reason`, keeping what it is about (a server, a device). */
export function reasonOf(err: unknown): string {
  if (err instanceof FusedError) return err.subject ? `${err.subject}: ${err.message}` : err.message;
  return describeError(err);
}
