/**
 * A loopback fake of the Azure Key Vault secrets data plane, speaking the wire protocol recorded in
 * test/fixtures/recordings/azure-keyvault-secrets/ (checked by test/providers/azure-key-vault-store.test.ts):
 *
 * - HTTPS on 127.0.0.1:<random port> with a self-signed certificate made at start (node:crypto only, see
 *   self-signed-cert.ts). Trust it with the client option `tlsOptions: { ca }`.
 * - Challenge auth: a request without `Authorization: Bearer ...` gets 401 with
 *   `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>", resource="https://vault.azure.net"`
 *   and the AKV10000 error body; any bearer token is then accepted.
 * - `api-version` arrives as `api%2Dversion` from the JS SDK and plain from the recordings: parsed with
 *   URLSearchParams, any value accepted, missing -> 400.
 * - PUT /secrets/{name} (set: new latest version), GET /secrets/{name}/[{version}] (empty version =
 *   latest = most recently created, even when disabled -> 403 Forbidden/SecretDisabled), PATCH
 *   /secrets/{name}/[{version}] (attributes, contentType, tags: a given tag map replaces the old one; the
 *   response has no value), GET /secrets/{name}/versions?maxresults=N (items without value, ordered by
 *   version id, i.e. not chronologically, paged with nextLink/$skiptoken). Unknown secret or version ->
 *   404 SecretNotFound. Timestamps are unix seconds (1 s granularity), like the real service.
 * - Listing the versions of a secret that does not exist answers 200 with an empty page. (Not covered
 *   by the recordings; the store treats a 404 there the same way.)
 *
 * Knobs: `fault()` (one-shot or repeated error responses / dropped connections / malformed 200
 * answers, applied or not, per operation and secret), `deny()` (RBAC ForbiddenByRbac for a data action), `pageSize`. `log` records every request
 * without bodies or values; `state` holds the vault (values included: read them only in assertions).
 * The server is unref'd and closes itself after `lifetimeMs` even if nobody calls close().
 */
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { createSelfSignedCert } from './self-signed-cert.ts';

export type AzureFakeOp = 'setSecret' | 'getSecret' | 'getSecretVersions' | 'updateSecret' | 'unsupported';

export const DATA_ACTIONS: Record<Exclude<AzureFakeOp, 'unsupported'>, string> = {
  setSecret: 'Microsoft.KeyVault/vaults/secrets/setSecret/action',
  getSecret: 'Microsoft.KeyVault/vaults/secrets/getSecret/action',
  getSecretVersions: 'Microsoft.KeyVault/vaults/secrets/readMetadata/action',
  updateSecret: 'Microsoft.KeyVault/vaults/secrets/update/action',
};

export interface FakeSecretVersion {
  version: string;
  value: string;
  enabled: boolean;
  created: number;
  updated: number;
  exp?: number | undefined;
  nbf?: number | undefined;
  contentType?: string | undefined;
  tags?: Record<string, string> | undefined;
}

export interface AzureFakeLogEntry {
  method: string;
  /** path without query */
  path: string;
  op: AzureFakeOp;
  name?: string | undefined;
  version?: string | undefined;
  apiVersion: string | null;
  authorized: boolean;
  status: number;
  /** set when a fault rule answered */
  fault?: string | undefined;
  /** `$skiptoken` present (a followed nextLink) */
  skiptoken?: boolean | undefined;
}

export interface AzureFaultRule {
  op: AzureFakeOp | '*';
  /** secret name to match (exact); any when absent */
  name?: string | undefined;
  /** HTTP status to answer with; ignored when `drop` */
  status?: number | undefined;
  code?: string | undefined;
  innerCode?: string | undefined;
  message?: string | undefined;
  /** destroy the connection instead of answering (network error) */
  drop?: boolean | undefined;
  /** how many matching requests to fail; default 1; Infinity for always */
  times?: number | undefined;
  /**
   * answer 200 with a body the SDK cannot use instead of an error: `truncated` (the real JSON cut off
   * mid-body, inside the value when there is one; still application/json), `html` (a proxy's error
   * page, text/html), `shape` (well-formed JSON missing the essential fields: a secret bundle whose
   * `id` has no version segment and no `value`, a version list with no `value` array).
   */
  malformed?: 'truncated' | 'html' | 'shape' | undefined;
  /** with `malformed`: the request took effect (the write/update happened) before the bad answer */
  applied?: boolean | undefined;
}

export interface AzureFakeState {
  readonly tenantId: string;
  /** list page size when the client sends no maxresults (the real default is 25) */
  pageSize: number;
  readonly secrets: Map<string, FakeSecretVersion[]>;
  /** versions in creation order */
  versions(name: string): FakeSecretVersion[];
  latest(name: string): FakeSecretVersion | undefined;
  faults: (AzureFaultRule & { remaining: number })[];
  tokensSeen: number;
}

export interface AzureFake {
  vaultUrl: string;
  /** PEM certificate to trust */
  ca: string;
  state: AzureFakeState;
  log: AzureFakeLogEntry[];
  fault(rule: AzureFaultRule): void;
  /** answer 403 ForbiddenByRbac for this operation (optionally one secret), like a missing role assignment */
  deny(op: Exclude<AzureFakeOp, 'unsupported'>, name?: string, times?: number): void;
  clearFaults(): void;
  close(): Promise<void>;
}

export interface AzureFakeOptions {
  pageSize?: number;
  /** the server closes itself after this long (default 5 minutes) */
  lifetimeMs?: number;
  tenantId?: string;
}

const NAME_RE = /^[0-9a-zA-Z-]{1,127}$/;

export async function startAzureFake(opts: AzureFakeOptions = {}): Promise<AzureFake> {
  const { cert, key } = createSelfSignedCert('keyrotor azure key vault fake');
  const secrets = new Map<string, FakeSecretVersion[]>();
  const log: AzureFakeLogEntry[] = [];
  const state: AzureFakeState = {
    tenantId: opts.tenantId ?? '00000000-0000-0000-0000-00000000a2f1',
    pageSize: opts.pageSize ?? 25,
    secrets,
    versions: (name) => [...(secrets.get(name) ?? [])],
    latest: (name) => secrets.get(name)?.at(-1),
    faults: [],
    tokensSeen: 0,
  };
  let vaultUrl = '';

  const now = () => Math.floor(Date.now() / 1000);
  const attributes = (v: FakeSecretVersion) => ({
    enabled: v.enabled,
    ...(v.nbf !== undefined ? { nbf: v.nbf } : {}),
    ...(v.exp !== undefined ? { exp: v.exp } : {}),
    created: v.created,
    updated: v.updated,
    recoveryLevel: 'CustomizedRecoverable+Purgeable',
    recoverableDays: 7,
  });
  const idOf = (name: string, v: FakeSecretVersion) => `${vaultUrl}/secrets/${name}/${v.version}`;
  const bundle = (name: string, v: FakeSecretVersion, withValue: boolean) => ({
    ...(withValue ? { value: v.value } : {}),
    ...(v.contentType !== undefined ? { contentType: v.contentType } : {}),
    id: idOf(name, v),
    attributes: attributes(v),
    ...(v.tags !== undefined ? { tags: v.tags } : {}),
  });
  const item = (name: string, v: FakeSecretVersion) => ({
    id: idOf(name, v),
    attributes: attributes(v),
    ...(v.contentType !== undefined ? { contentType: v.contentType } : {}),
    ...(v.tags !== undefined ? { tags: v.tags } : {}),
  });
  const notFound = (what: string) => ({
    status: 404,
    body: {
      error: {
        code: 'SecretNotFound',
        message: `A secret with (name/id) ${what} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182`,
      },
    },
  });
  const disabled = () => ({
    status: 403,
    body: {
      error: {
        code: 'Forbidden',
        message: 'Operation get is not allowed on a disabled secret.',
        innererror: { code: 'SecretDisabled' },
      },
    },
  });
  const bad = (message: string) => ({ status: 400, body: { error: { code: 'BadParameter', message } } });

  function find(name: string, version: string): FakeSecretVersion | { status: number; body: unknown } {
    const vs = secrets.get(name);
    if (!vs || vs.length === 0) return notFound(version ? `${name}/${version}` : name);
    const v = version ? vs.find((x) => x.version === version) : vs.at(-1);
    return v ?? notFound(`${name}/${version}`);
  }

  function route(method: string, parts: string[]): { op: AzureFakeOp; name?: string; version?: string } {
    if (parts[0] !== 'secrets' || parts.length < 2 || parts.length > 3) return { op: 'unsupported' };
    const name = parts[1]!;
    if (method === 'PUT' && parts.length === 2) return { op: 'setSecret', name };
    if (method === 'GET' && parts[2] === 'versions') return { op: 'getSecretVersions', name };
    if (method === 'GET' && parts.length === 3) return { op: 'getSecret', name, version: parts[2]! };
    if (method === 'PATCH' && parts.length === 3) return { op: 'updateSecret', name, version: parts[2]! };
    return { op: 'unsupported', name };
  }

  function handle(
    op: AzureFakeOp,
    name: string,
    version: string,
    query: URLSearchParams,
    body: unknown,
  ): { status: number; body: unknown } {
    switch (op) {
      case 'setSecret': {
        if (!NAME_RE.test(name)) return bad(`The request URI contains an invalid name: ${name}`);
        const b = (body ?? {}) as {
          value?: unknown;
          contentType?: string;
          tags?: Record<string, string>;
          attributes?: { enabled?: boolean; exp?: number; nbf?: number };
        };
        if (typeof b.value !== 'string') return bad('Property value is required');
        if (b.tags && Object.keys(b.tags).length > 15) return bad('Too many tags: a secret can have at most 15 tags');
        const t = now();
        const v: FakeSecretVersion = {
          version: randomBytes(16).toString('hex'),
          value: b.value,
          enabled: b.attributes?.enabled ?? true,
          created: t,
          updated: t,
          exp: b.attributes?.exp,
          nbf: b.attributes?.nbf,
          contentType: b.contentType,
          tags: b.tags,
        };
        secrets.set(name, [...(secrets.get(name) ?? []), v]);
        return { status: 200, body: bundle(name, v, true) };
      }
      case 'getSecret': {
        const v = find(name, version);
        if ('status' in v) return v;
        if (!v.enabled) return disabled();
        return { status: 200, body: bundle(name, v, true) };
      }
      case 'updateSecret': {
        const v = find(name, version);
        if ('status' in v) return v;
        const b = (body ?? {}) as {
          contentType?: string;
          tags?: Record<string, string>;
          attributes?: { enabled?: boolean; exp?: number; nbf?: number };
        };
        if (b.tags && Object.keys(b.tags).length > 15) return bad('Too many tags: a secret can have at most 15 tags');
        if (b.attributes?.enabled !== undefined) v.enabled = b.attributes.enabled;
        if (b.attributes?.exp !== undefined) v.exp = b.attributes.exp;
        if (b.attributes?.nbf !== undefined) v.nbf = b.attributes.nbf;
        if (b.contentType !== undefined) v.contentType = b.contentType;
        if (b.tags !== undefined) v.tags = b.tags; // replaces the whole map
        v.updated = now();
        return { status: 200, body: bundle(name, v, false) };
      }
      case 'getSecretVersions': {
        const all = [...(secrets.get(name) ?? [])].sort((a, b) => (a.version < b.version ? -1 : 1));
        const max = Math.max(1, Math.min(25, Number(query.get('maxresults') ?? state.pageSize) || state.pageSize));
        const skip = query.get('$skiptoken');
        const start = skip ? Number(Buffer.from(skip, 'base64url').toString('utf8')) || 0 : 0;
        const page = all.slice(start, start + max);
        const next = start + max < all.length ? start + max : null;
        const nextQuery = new URLSearchParams({ 'api-version': query.get('api-version') ?? '' });
        const nextLink =
          next === null
            ? null
            : `${vaultUrl}/secrets/${name}/versions?${nextQuery.toString()}&$skiptoken=${Buffer.from(String(next)).toString('base64url')}&maxresults=${max}`;
        return { status: 200, body: { value: page.map((v) => item(name, v)), nextLink } };
      }
      default:
        return {
          status: 400,
          body: { error: { code: 'BadParameter', message: 'operation not supported by the keyrotor fake' } },
        };
    }
  }

  function takeFault(op: AzureFakeOp, name: string | undefined): (AzureFaultRule & { remaining: number }) | undefined {
    const rule = state.faults.find(
      (f) => (f.op === '*' || f.op === op) && (f.name === undefined || f.name === name) && f.remaining > 0,
    );
    if (rule) rule.remaining--;
    state.faults = state.faults.filter((f) => f.remaining > 0);
    return rule;
  }

  const commonHeaders = (status: number, authorized: boolean): Record<string, string> => ({
    'Cache-Control': 'no-cache',
    Pragma: 'no-cache',
    Expires: '-1',
    'Strict-Transport-Security': 'max-age=31536000;includeSubDomains',
    'X-Content-Type-Options': 'nosniff',
    'x-ms-keyvault-region': 'loopback',
    'x-ms-keyvault-service-version': '1.9.0.0-fake',
    'x-ms-keyvault-network-info': 'conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;',
    'x-ms-request-id': randomBytes(16).toString('hex'),
    ...(authorized && status !== 401 ? { 'x-ms-keyvault-rbac-assignment-id': 'fake0000000000000000000000000000' } : {}),
  });

  function send(
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    body: unknown,
    authorized: boolean,
    extra: Record<string, string> = {},
  ) {
    const text = JSON.stringify(body);
    const clientRequestId = req.headers['x-ms-client-request-id'];
    res.writeHead(status, {
      ...commonHeaders(status, authorized),
      ...(typeof clientRequestId === 'string' ? { 'x-ms-client-request-id': clientRequestId } : {}),
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': String(Buffer.byteLength(text)),
      ...extra,
    });
    res.end(text);
  }

  /** a 200 the SDK cannot use, built from the answer that would have gone out (see AzureFaultRule.malformed) */
  function sendMalformed(
    req: IncomingMessage,
    res: ServerResponse,
    kind: 'truncated' | 'html' | 'shape',
    op: AzureFakeOp,
    name: string,
    real: unknown,
  ) {
    let text: string;
    let type = 'application/json; charset=utf-8';
    if (kind === 'html') {
      text = '<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>';
      type = 'text/html';
    } else if (kind === 'truncated') {
      const full = JSON.stringify(real);
      const v = real && typeof real === 'object' ? (real as { value?: unknown }).value : undefined;
      // cut inside the value when the answer carries one (a connection lost mid-body), else halfway
      const at =
        typeof v === 'string' && v.length > 1
          ? full.indexOf(JSON.stringify(v)) + 1 + Math.floor(v.length / 2)
          : Math.max(1, Math.floor(full.length / 2));
      text = full.slice(0, at);
    } else {
      const r = (real && typeof real === 'object' ? real : {}) as {
        attributes?: unknown;
        tags?: unknown;
        nextLink?: unknown;
      };
      text = JSON.stringify(
        op === 'getSecretVersions'
          ? { nextLink: null }
          : {
              id: `${vaultUrl}/secrets/${name}`,
              ...(r.attributes ? { attributes: r.attributes } : {}),
              ...(r.tags ? { tags: r.tags } : {}),
            },
      );
    }
    const clientRequestId = req.headers['x-ms-client-request-id'];
    res.writeHead(200, {
      ...commonHeaders(200, true),
      ...(typeof clientRequestId === 'string' ? { 'x-ms-client-request-id': clientRequestId } : {}),
      'Content-Type': type,
      'Content-Length': String(Buffer.byteLength(text)),
    });
    res.end(text);
  }

  const server = https.createServer({ cert, key }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'https://127.0.0.1');
      const query = new URLSearchParams(url.search); // decodes api%2Dversion to api-version
      const parts = url.pathname.split('/').slice(1).map(decodeURIComponent);
      const method = req.method ?? 'GET';
      const { op, name, version } = route(method, parts);
      const auth = req.headers.authorization;
      const authorized = typeof auth === 'string' && /^Bearer \S+/.test(auth);
      const entry: AzureFakeLogEntry = {
        method,
        path: url.pathname,
        op,
        name,
        version: version === undefined ? undefined : version || '(latest)',
        apiVersion: query.get('api-version'),
        authorized,
        status: 0,
        ...(query.has('$skiptoken') ? { skiptoken: true } : {}),
      };
      log.push(entry);
      if (!authorized) {
        entry.status = 401;
        send(
          req,
          res,
          401,
          { error: { code: 'Unauthorized', message: 'AKV10000: Request is missing a Bearer or PoP token.' } },
          false,
          {
            'WWW-Authenticate': `Bearer authorization="https://login.microsoftonline.com/${state.tenantId}", resource="https://vault.azure.net"`,
          },
        );
        return;
      }
      state.tokensSeen++;
      if (!entry.apiVersion) {
        entry.status = 400;
        send(
          req,
          res,
          400,
          { error: { code: 'BadParameter', message: 'The api-version query parameter is required' } },
          true,
        );
        return;
      }
      const f = takeFault(op, name);
      if (f?.malformed) {
        entry.fault = `malformed ${f.malformed}${f.applied ? ' applied' : ''}`;
        let real: { status: number; body: unknown } = {
          status: 200,
          body: op === 'getSecretVersions' ? { value: [], nextLink: null } : {},
        };
        if (f.applied) {
          let reqBody: unknown;
          try {
            reqBody = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
          } catch {
            reqBody = undefined;
          }
          real = handle(op, name ?? '', version ?? '', query, reqBody);
        }
        entry.status = 200;
        sendMalformed(req, res, f.malformed, op, name ?? '', real.body);
        return;
      }
      if (f) {
        entry.fault = f.drop ? 'drop' : `${f.status ?? 500} ${f.code ?? ''}`.trim();
        if (f.drop) {
          entry.status = -1;
          req.socket.destroy();
          return;
        }
        entry.status = f.status ?? 500;
        send(
          req,
          res,
          entry.status,
          {
            error: {
              code: f.code ?? 'InternalServerError',
              message: f.message ?? 'fault injected by the keyrotor fake',
              ...(f.innerCode ? { innererror: { code: f.innerCode } } : {}),
            },
          },
          true,
        );
        return;
      }
      let body: unknown;
      if (chunks.length) {
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          entry.status = 400;
          send(req, res, 400, { error: { code: 'BadParameter', message: 'request body is not JSON' } }, true);
          return;
        }
      }
      const r = handle(op, name ?? '', version ?? '', query, body);
      entry.status = r.status;
      send(req, res, r.status, r.body, true);
    });
  });

  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.unref();
  vaultUrl = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;

  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= new Promise<void>((resolve) => {
      clearTimeout(timer);
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }));
  const timer = setTimeout(() => void close(), opts.lifetimeMs ?? 5 * 60_000);
  timer.unref();

  return {
    vaultUrl,
    ca: cert,
    state,
    log,
    fault: (rule) => state.faults.push({ ...rule, remaining: rule.times ?? 1 }),
    deny: (op, name, times = Infinity) =>
      state.faults.push({
        op,
        name,
        status: 403,
        code: 'Forbidden',
        innerCode: 'ForbiddenByRbac',
        message:
          `Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\n` +
          `Caller: appid=00000000-0000-0000-0000-000000000000;oid=00000000-0000-0000-0000-000000000001\r\nAction: '${DATA_ACTIONS[op]}'\r\n` +
          `Resource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg/providers/microsoft.keyvault/vaults/fake/secrets/${name ?? '*'}'\r\n` +
          `Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\nVault: fake;location=loopback\r\n`,
        remaining: times,
      }),
    clearFaults: () => {
      state.faults = [];
    },
    close,
  };
}
