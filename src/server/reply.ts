// An error the server answers with: the wire code and the reply text.
import type { ErrorCode } from '../protocol/index.js';

export class Reply extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}
