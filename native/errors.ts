// SPDX-License-Identifier: Apache-2.0
// The addon's errors. native/ sits below the agent and imports nothing from it, so weft's base error
// classes live here: WeftError (a stable `code`) and SyscallError (which syscall failed, and why). The
// addon constructs both (native/index.ts hands them over with setErrorClasses); agent/errors.ts builds
// the one catalogue on them, so an `instanceof WeftError` or a `code` check means the same whether the
// addon, its TypeScript or the agent raised the error.

/** The codes the addon and native/*.ts raise: a part of agent/errors.ts's ErrorCodes. */
export const NativeErrorCodes = {
  /** A syscall made by the native addon failed; `syscall` and `errno` say which and why. */
  SYSCALL: 'WEFT_ERR_SYSCALL',
  /** A BPF object, program, map or link could not be found, opened or used. */
  BPF: 'WEFT_ERR_BPF',
  /** The native addon was used after close() or with an argument of the wrong shape. */
  NATIVE_USAGE: 'WEFT_ERR_NATIVE_USAGE',
  /** Setting up the machine (packages, build) failed: here, the addon is not built. */
  SETUP: 'WEFT_ERR_SETUP',
} as const;

export type NativeErrorCode = (typeof NativeErrorCodes)[keyof typeof NativeErrorCodes];

/**
 * weft's error: a stable `WEFT_ERR_*` code operators grep for and tests assert on. The codes are
 * agent/errors.ts's ErrorCodes (which types `code` as that catalogue for the agent's code).
 */
export class WeftError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WeftError';
    this.code = code;
  }
}

/** A failed system call in the native addon: `bpf(2) MAP_UPDATE_ELEM: EPERM (1)`. */
export class SyscallError extends WeftError {
  // Narrower than WeftError's: a SyscallError is a WeftError of the agent's catalogue too.
  declare readonly code: typeof NativeErrorCodes.SYSCALL;
  readonly syscall: string;
  readonly errno: number;
  readonly errnoName: string;
  constructor(message: string, syscall: string, errno: number, errnoName: string) {
    super(NativeErrorCodes.SYSCALL, message);
    this.name = 'SyscallError';
    this.syscall = syscall;
    this.errno = errno;
    this.errnoName = errnoName;
  }
}

