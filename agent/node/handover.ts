// Upgrading the node agent without dropping a connection (what no anchor does: istio#51126). The new
// agent asks the running one, over the pod channel, to hand over; the running one sends every pod
// proxy's listening sockets (15001, 15006, 15008 inside each pod netns) and its workload certificates
// over a unix socket (SCM_RIGHTS), then stops accepting and drains what it relays. The sockets never
// close: connections arriving meanwhile wait in their accept queues and the new agent accepts them.
//
// On the wire: a sequence of SOCK_SEQPACKET messages, each a JSON header and its descriptors:
//   {"kind":"certs","certs":[...]}                  no descriptors (split when large)
//   {"kind":"pod","pod":"ns/name","netns":"..."}     fds = [outbound, inbound, hbone]
//   {"kind":"cancel"}                                the receiver itself gives up waiting
import { receiveFds, sendFds, type FdMessage } from '../../native/index.js';
import { ErrorCodes, WeftError } from '../errors.js';
import type { HandedCertificate } from '../identity/manager.js';
import type { ListenerFds } from '../ztunnel/pod-proxy.js';

/** What one agent hands to the next. */
export interface Handover {
  certificates: HandedCertificate[];
  /** Listening sockets by pod key (`ns/name`), with the netns they were made in. */
  listeners: Map<string, { netns: string; fds: ListenerFds }>;
}

/** Messages stay well under the 64 KiB a message may carry. */
const MAX_CERT_BYTES = 48 * 1024;
const MAX_MESSAGES = 1024;

type Header = { kind: 'certs'; certs: HandedCertificate[] } | { kind: 'pod'; pod: string; netns: string } | { kind: 'cancel' };

function message(header: Header, fds: number[] = []): FdMessage {
  return { data: Buffer.from(JSON.stringify(header)), fds };
}

export function encodeHandover(h: Handover): FdMessage[] {
  const out: FdMessage[] = [];
  let batch: HandedCertificate[] = [];
  let size = 0;
  for (const c of h.certificates) {
    const n = JSON.stringify(c).length;
    if (batch.length && size + n > MAX_CERT_BYTES) {
      out.push(message({ kind: 'certs', certs: batch }));
      batch = [];
      size = 0;
    }
    batch.push(c);
    size += n;
  }
  if (batch.length) out.push(message({ kind: 'certs', certs: batch }));
  for (const [pod, l] of h.listeners) out.push(message({ kind: 'pod', pod, netns: l.netns }, [l.fds.outbound, l.fds.inbound, l.fds.hbone]));
  if (out.length > MAX_MESSAGES) throw new WeftError(ErrorCodes.AGENT, `hand-over of ${h.listeners.size} pods does not fit ${MAX_MESSAGES} messages`);
  return out;
}

/** Decode what arrived; a malformed message closes every descriptor received and throws. Undefined
 * when the receiver cancelled its own wait. */
export function decodeHandover(messages: FdMessage[], close: (fd: number) => void): Handover | undefined {
  const h: Handover = { certificates: [], listeners: new Map() };
  try {
    for (const m of messages) {
      const header = JSON.parse(m.data.toString('utf8')) as Header;
      if (header.kind === 'cancel') throw new Cancelled();
      if (header.kind === 'certs' && Array.isArray(header.certs) && m.fds.length === 0) h.certificates.push(...header.certs);
      else if (header.kind === 'pod' && typeof header.pod === 'string' && typeof header.netns === 'string' && m.fds.length === 3) {
        const [outbound, inbound, hbone] = m.fds as [number, number, number];
        h.listeners.set(header.pod, { netns: header.netns, fds: { outbound, inbound, hbone } });
      } else throw new WeftError(ErrorCodes.AGENT, `unexpected hand-over message ${JSON.stringify(header).slice(0, 100)} with ${m.fds.length} descriptors`);
    }
  } catch (err) {
    for (const m of messages) for (const fd of m.fds) close(fd);
    if (err instanceof Cancelled) return undefined;
    throw err;
  }
  return h;
}

class Cancelled extends Error {}

/** The running agent's side: send everything to `path` (resolves once the new agent holds it all). */
export function sendHandover(path: string, h: Handover, timeoutMs: number): Promise<void> {
  return sendFds(path, encodeHandover(h), { timeoutMs });
}

/** The new agent's side: wait at `path` for a hand-over; `cancel()` ends the wait early (nobody to
 * take over from). */
export function awaitHandover(path: string, timeoutMs: number, close: (fd: number) => void): { result: Promise<Handover | undefined>; cancel: () => Promise<void> } {
  const result = receiveFds(path, { timeoutMs, maxMessages: MAX_MESSAGES }).then((messages) => decodeHandover(messages, close));
  return { result, cancel: () => sendFds(path, [message({ kind: 'cancel' })], { timeoutMs }) };
}
