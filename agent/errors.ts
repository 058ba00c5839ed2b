// The one error catalogue of weft. Every error the agent, the lab or the CLI raises on purpose is a
// WeftError with a stable code; operators grep logs for the code, tests assert on it. The classes and
// the addon's codes come from native/errors.ts (the addon raises them, and native/ imports nothing
// from the agent): this catalogue extends them, so there is one WeftError and one list of codes.
import { NativeErrorCodes, SyscallError, WeftError as BaseWeftError } from '../native/errors.js';

export { SyscallError };

export const ErrorCodes = {
  /** SYSCALL, BPF, NATIVE_USAGE, SETUP: the addon's (native/errors.ts says what each means). */
  ...NativeErrorCodes,
  /** A configuration document is invalid: the message names file, line, field and reason. */
  CONFIG_INVALID: 'WEFT_ERR_CONFIG_INVALID',
  /** The lab could not be created, changed or removed. */
  LAB: 'WEFT_ERR_LAB',
  /** A lab operation needs a lab that is not running (or one is already running). */
  LAB_STATE: 'WEFT_ERR_LAB_STATE',
  /** The process lacks a privilege (root, CAP_BPF, CAP_NET_ADMIN) or a kernel feature. */
  PRIVILEGE: 'WEFT_ERR_PRIVILEGE',
  /** A command-line argument is missing or malformed. */
  USAGE: 'WEFT_ERR_USAGE',
  /** A captured connection had no original destination recorded for it. */
  NO_ORIGINAL_DST: 'WEFT_ERR_NO_ORIGINAL_DST',
  /** An HBONE tunnel could not be opened or was refused by its peer. */
  HBONE: 'WEFT_ERR_HBONE',
  /** The proxy could not connect to a destination (an app, a passthrough endpoint): refused, timed out. */
  UPSTREAM: 'WEFT_ERR_UPSTREAM',
  /** The controller could not start, or an agent could not reach or use it. */
  CONTROLLER: 'WEFT_ERR_CONTROLLER',
  /** A SPIFFE ID or a workload certificate is malformed, or a workload's certificate is unavailable. */
  IDENTITY: 'WEFT_ERR_IDENTITY',
  /** The certificate authority refused a CSR, or could not load or create its root. */
  CA: 'WEFT_ERR_CA',
  /** A mutual-TLS handshake failed or the peer's identity was not acceptable; the message says why. */
  TLS: 'WEFT_ERR_TLS',
  /** A node agent's pod channel (the CNI plugin's and the lab's way in) did not answer or refused. */
  AGENT: 'WEFT_ERR_AGENT',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/**
 * weft's error, with a code from ErrorCodes. The class is native/errors.ts's (the addon throws it
 * too); this view of it types `code` as the catalogue's and takes only the catalogue's codes.
 */
export interface WeftError extends BaseWeftError {
  readonly code: ErrorCode;
}
interface WeftErrorClass {
  new (code: ErrorCode, message: string, options?: { cause?: unknown }): WeftError;
  readonly prototype: WeftError;
}
export const WeftError = BaseWeftError as WeftErrorClass;

/** One problem in a configuration document, located precisely enough to fix it without guessing. */
export interface ConfigProblem {
  file: string;
  line: number;
  field: string;
  reason: string;
}

export function formatProblem(p: ConfigProblem): string {
  return `${p.file}:${p.line}: ${p.field ? `${p.field}: ` : ''}${p.reason}`;
}

export class ConfigError extends WeftError {
  readonly problems: ConfigProblem[];
  constructor(problems: ConfigProblem[]) {
    super(ErrorCodes.CONFIG_INVALID, problems.map(formatProblem).join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
