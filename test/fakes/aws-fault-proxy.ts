/**
 * A loopback HTTP proxy in front of moto (which has no fault knobs) that can garble the answer of one
 * Secrets Manager operation, chosen by its `X-Amz-Target` (e.g. `GetSecretValue`):
 *
 * - `applied: true`  the request is forwarded, moto applies it, and its answer is replaced by a
 *                    malformed 200 built from it;
 * - `applied: false` the request is answered with a malformed 200 and never reaches moto.
 *
 * Kinds: `truncated` (the answer's JSON cut off mid-body, inside `SecretString` when it has one; still
 * `application/x-amz-json-1.1`), `html` (a gateway's error page with a 200, `text/html`), `shape`
 * (well-formed JSON `{"Name": ...}` without any of the fields the operation answers with).
 * Everything else passes through untouched. `log` records method, operation, status and the fault
 * applied, never a body. The server is unref'd; close it in afterAll.
 */
import { startHttpProxy } from './http-proxy.ts';

export type AwsMalformedKind = 'truncated' | 'html' | 'shape';

export interface AwsFaultRule {
  /** the operation, as in `X-Amz-Target: secretsmanager.<op>` */
  op: string;
  kind: AwsMalformedKind;
  /** forward first (the change takes effect), then garble the answer */
  applied?: boolean | undefined;
  /** how many matching requests to garble (default 1) */
  times?: number | undefined;
}

export interface AwsProxyLogEntry {
  method: string;
  op: string;
  status: number;
  fault?: string | undefined;
}

export interface AwsFaultProxy {
  endpoint: string;
  log: AwsProxyLogEntry[];
  fault(rule: AwsFaultRule): void;
  clearFaults(): void;
  close(): Promise<void>;
}

function garble(kind: AwsMalformedKind, real: string, secretId: string): { type: string; text: string } {
  if (kind === 'html')
    return {
      type: 'text/html',
      text: '<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>',
    };
  if (kind === 'shape') return { type: 'application/x-amz-json-1.1', text: JSON.stringify({ Name: secretId }) };
  let parsed: unknown;
  try {
    parsed = JSON.parse(real);
  } catch {
    parsed = undefined;
  }
  const value = parsed && typeof parsed === 'object' ? (parsed as { SecretString?: unknown }).SecretString : undefined;
  const full = parsed === undefined ? JSON.stringify({ Name: secretId }) : real;
  // a connection lost mid-body: inside the value when the answer carries one, else halfway
  const at =
    typeof value === 'string' && value.length > 1
      ? full.indexOf(JSON.stringify(value)) + 1 + Math.floor(value.length / 2)
      : Math.max(1, Math.floor(full.length / 2));
  return { type: 'application/x-amz-json-1.1', text: full.slice(0, at) };
}

export async function startAwsFaultProxy(target: string): Promise<AwsFaultProxy> {
  const log: AwsProxyLogEntry[] = [];
  let faults: (AwsFaultRule & { remaining: number })[] = [];

  const proxy = await startHttpProxy(
    target,
    async ({ req, res, op, body, forward, pass }) => {
      const entry: AwsProxyLogEntry = { method: req.method ?? 'GET', op, status: 0 };
      log.push(entry);
      const rule = faults.find((f) => f.op === op && f.remaining > 0);
      if (rule) rule.remaining--;
      faults = faults.filter((f) => f.remaining > 0);

      let secretId = '';
      try {
        const b = JSON.parse(body.toString('utf8')) as { SecretId?: unknown };
        if (typeof b.SecretId === 'string') secretId = b.SecretId;
      } catch {
        // not JSON: no name to echo
      }

      try {
        if (!rule) {
          const r = await forward();
          entry.status = r.status;
          pass(r);
          return;
        }
        let real = '';
        if (rule.applied) {
          const r = await forward();
          real = r.status === 200 ? r.body.toString('utf8') : '';
        }
        const g = garble(rule.kind, real, secretId);
        entry.status = 200;
        entry.fault = `malformed ${rule.kind}${rule.applied ? ' applied' : ''}`;
        res.writeHead(200, {
          'content-type': g.type,
          'content-length': String(Buffer.byteLength(g.text)),
          'x-amzn-requestid': `fault-${log.length}`,
        });
        res.end(g.text);
      } catch (e) {
        entry.status = 502;
        throw e;
      }
    },
    { hostHeader: 'target' },
  );
  return {
    endpoint: proxy.endpoint,
    log,
    fault: (rule) => faults.push({ ...rule, remaining: rule.times ?? 1 }),
    clearFaults: () => {
      faults = [];
    },
    close: proxy.close,
  };
}
