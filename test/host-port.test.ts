// SPDX-License-Identifier: Apache-2.0
// HOST:PORT parsing shared by the controller, its client and the relay (agent/system/host-port.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ErrorCodes, WeftError } from '../agent/errors.js';
import { parseHostPort } from '../agent/system/host-port.js';

test('HOST:PORT and [v6]:PORT split; anything else is a usage error naming the flag', () => {
  assert.deepEqual(parseHostPort('10.0.0.1:15012'), { host: '10.0.0.1', port: 15012 });
  assert.deepEqual(parseHostPort('localhost:4245'), { host: 'localhost', port: 4245 });
  assert.deepEqual(parseHostPort('[::1]:4244'), { host: '::1', port: 4244 });
  assert.deepEqual(parseHostPort('0.0.0.0:0'), { host: '0.0.0.0', port: 0 });
  for (const bad of ['10.0.0.1', '10.0.0.1:65536', '::1:4244', ':80', 'host:', 'host:123456', '[::1]', 'a:b']) {
    assert.throws(
      () => parseHostPort(bad, '--listen'),
      (e: unknown) => e instanceof WeftError && e.code === ErrorCodes.USAGE && e.message === `--listen: "${bad}" is not HOST:PORT`,
      bad,
    );
  }
});
