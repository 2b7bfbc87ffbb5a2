/**
 * A loopback fake of GCP Secret Manager v1 that speaks real gRPC. The service definition is loaded
 * with @grpc/proto-loader from the protos shipped inside `@google-cloud/secret-manager` (imports
 * resolve from google-gax's protos), so the official client talks to it exactly as it talks to
 * Google. Only the RPCs keyrotor uses are implemented; the rest answer UNIMPLEMENTED on their own.
 *
 * Behaviour modelled on the real service:
 * - `UpdateSecret` honours `update_mask` (labels, annotations, version_aliases; a masked map is
 *   replaced as a whole) and the secret `etag` as a compare-and-swap: a stale etag is ABORTED.
 *   Every change to a secret gets a new etag.
 * - `AddSecretVersion` checks `data_crc32c` when sent; versions are numbered 1, 2, 3...
 * - Version names resolve by number, by alias (`.../versions/current`) and `latest` (the most
 *   recently created version, even when disabled: reading it then fails FAILED_PRECONDITION).
 * - IAM: `deny(permission)` makes calls needing it fail PERMISSION_DENIED with the real wording.
 *
 * Knobs: `failNext` (fail the next N calls of a method with a code, optionally after applying the
 * change, i.e. a lost response), `alterNext` (answer OK with a well-formed message that lacks fields:
 * no `etag`, an empty `name`, a version without payload, an alias to a missing version), `setLatency`, `beforeNext` (run code, e.g. another writer, right
 * before a call is handled). `log` records every call (method, resource, mask, result code), never
 * a payload. `close()` stops the server; call it in afterAll.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);

export type GcpMethod =
  | 'CreateSecret'
  | 'GetSecret'
  | 'UpdateSecret'
  | 'AddSecretVersion'
  | 'AccessSecretVersion'
  | 'GetSecretVersion'
  | 'ListSecretVersions'
  | 'DisableSecretVersion'
  | 'EnableSecretVersion'
  | 'DestroySecretVersion'
  | 'DeleteSecret';

const PERMISSIONS: Record<GcpMethod, string> = {
  CreateSecret: 'secretmanager.secrets.create',
  GetSecret: 'secretmanager.secrets.get',
  UpdateSecret: 'secretmanager.secrets.update',
  DeleteSecret: 'secretmanager.secrets.delete',
  AddSecretVersion: 'secretmanager.versions.add',
  AccessSecretVersion: 'secretmanager.versions.access',
  GetSecretVersion: 'secretmanager.versions.get',
  ListSecretVersions: 'secretmanager.versions.list',
  DisableSecretVersion: 'secretmanager.versions.disable',
  EnableSecretVersion: 'secretmanager.versions.enable',
  DestroySecretVersion: 'secretmanager.versions.destroy',
};

export type VersionState = 'ENABLED' | 'DISABLED' | 'DESTROYED';

export interface FakeVersion {
  number: number;
  /** emptied when destroyed */
  data: Buffer;
  crc32c: number;
  state: VersionState;
  createTime: Date;
  destroyTime?: Date | undefined;
  etag: string;
  clientChecksum: boolean;
}

export interface FakeSecret {
  name: string;
  createTime: Date;
  replication: unknown;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  aliases: Record<string, number>;
  etag: string;
  versions: Map<number, FakeVersion>;
  nextVersion: number;
}

export interface LogEntry {
  method: GcpMethod;
  /** the resource name or parent the call addressed */
  resource: string;
  /** UpdateSecret: the update_mask paths */
  mask?: string[] | undefined;
  /** 'OK' or the gRPC status name */
  code: string;
  /** true when the change was applied but the response was replaced by an injected error */
  lost?: boolean | undefined;
  /** true when the OK answer was altered by `alterNext` */
  altered?: boolean | undefined;
  at: number;
}

export interface FailOptions {
  code: grpc.status;
  count?: number;
  message?: string;
  /** apply the change first, then answer with the error (a lost response) */
  afterApply?: boolean;
}

export interface GcpFakeState {
  secrets: Map<string, FakeSecret>;
  denied: Set<string>;
  /** the secret or a clear test failure */
  secret(name: string): FakeSecret;
  /** version numbers of ENABLED versions whose payload equals `value` */
  enabledVersionsWith(name: string, value: string): number[];
}

export interface AlterOptions {
  /** how many calls (default 1) */
  count?: number;
  /** do not run the call (the change does not happen); `alter` gets undefined */
  skipApply?: boolean;
}

export interface GcpFake {
  port: number;
  state: GcpFakeState;
  log: LogEntry[];
  failNext(method: GcpMethod, opts: FailOptions): void;
  /**
   * Answer the next call(s) of `method` with OK and `alter(answer)` instead of the answer (the raw
   * proto-loader object, snake_case fields), e.g. `(r) => ({ ...r, etag: '' })`.
   */
  alterNext(method: GcpMethod, alter: (answer: any) => unknown, opts?: AlterOptions): void;
  setLatency(method: GcpMethod | '*', ms: number): void;
  /** run `fn` once, right before the next call of `method` is handled */
  beforeNext(method: GcpMethod, fn: () => unknown): void;
  /**
   * Fail the n-th call from now (1 = the next one), whatever its method, as `failNext` would: a crash
   * at any point of a step, before or after the change is applied.
   */
  failCall(n: number, opts: FailOptions): void;
  /** run `fn` after every call (its change applied or not), before the answer is sent; returns a remover */
  observe(fn: (entry: LogEntry) => void): () => void;
  deny(permission: string): void;
  allow(permission: string): void;
  /** clear faults, latency, hooks, denials and the log (state stays) */
  resetKnobs(): void;
  close(): Promise<void>;
}

// ------------------------------------------------------------------ helpers

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

export function crc32c(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of buf) c = CRC32C_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

class RpcError extends Error {
  readonly code: grpc.status;
  constructor(code: grpc.status, details: string) {
    super(details);
    this.code = code;
  }
}

function ts(d: Date) {
  const ms = d.getTime();
  return { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}

const SECRET_RE = /^projects\/([^/]+)\/secrets\/([^/]+)$/;
const VERSION_RE = /^(projects\/[^/]+\/secrets\/[^/]+)\/versions\/([^/]+)$/;
const ALIAS_RE = /^[a-zA-Z_][a-zA-Z0-9_-]{0,62}$/;
const ANNOTATION_KEY_RE = /^[a-zA-Z0-9](?:[a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?$/;
const ANNOTATIONS_MAX_BYTES = 16 * 1024;

function protosRoots(): { secretManager: string; gax: string } {
  const smRoot = packageRoot(require.resolve('@google-cloud/secret-manager'), '@google-cloud/secret-manager');
  // google-gax exports no package.json: resolve its main file (as the client does) and walk up
  const gaxRoot = packageRoot(require.resolve('google-gax', { paths: [smRoot] }), 'google-gax');
  return { secretManager: path.join(smRoot, 'build', 'protos'), gax: path.join(gaxRoot, 'build', 'protos') };
}

function packageRoot(file: string, name: string): string {
  for (let dir = path.dirname(file); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    try {
      if ((JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string }).name === name)
        return dir;
    } catch {
      // no package.json here
    }
  }
  throw new Error(`fake: cannot find the package root of ${name}`);
}

// request messages as decoded by proto-loader (keepCase, longs as strings)
type Req = Record<string, any>;

// ------------------------------------------------------------------ server

export async function startGcpFake(): Promise<GcpFake> {
  const roots = protosRoots();
  const def = await protoLoader.load('google/cloud/secretmanager/v1/service.proto', {
    includeDirs: [roots.secretManager, roots.gax],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: false,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    google: { cloud: { secretmanager: { v1: { SecretManagerService: { service: grpc.ServiceDefinition } } } } };
  };
  const service = pkg.google.cloud.secretmanager.v1.SecretManagerService.service;

  let etagSeq = 0;
  const newEtag = () => `"${(Date.now() * 1000 + ++etagSeq).toString(16)}"`;

  const secrets = new Map<string, FakeSecret>();
  const denied = new Set<string>();
  const log: LogEntry[] = [];
  const faults = new Map<GcpMethod, Array<Required<Pick<FailOptions, 'code'>> & FailOptions & { left: number }>>();
  const latency = new Map<GcpMethod | '*', number>();
  const hooks = new Map<GcpMethod, Array<() => unknown>>();
  const alters = new Map<GcpMethod, Array<{ alter: (answer: any) => unknown; left: number; skipApply: boolean }>>();
  let nthFault: { left: number; opts: FailOptions } | undefined;
  const observers = new Set<(entry: LogEntry) => void>();
  const notify = (entry: LogEntry) => {
    for (const o of observers) o(entry);
  };

  const state: GcpFakeState = {
    secrets,
    denied,
    secret(name) {
      const s = secrets.get(name);
      if (!s) throw new Error(`fake: no secret ${name}`);
      return s;
    },
    enabledVersionsWith(name, value) {
      const s = state.secret(name);
      return [...s.versions.values()]
        .filter((v) => v.state === 'ENABLED' && v.data.toString('utf8') === value)
        .map((v) => v.number);
    },
  };

  // ---------------------------------------------------------------- model

  function getSecret(name: string): FakeSecret {
    if (!SECRET_RE.test(name ?? ''))
      throw new RpcError(grpc.status.INVALID_ARGUMENT, `Invalid resource field value in the request: name '${name}'.`);
    const s = secrets.get(name);
    if (!s) throw new RpcError(grpc.status.NOT_FOUND, `Secret [${name}] not found or has no versions.`);
    return s;
  }

  function resolveVersion(name: string): { secret: FakeSecret; version: FakeVersion } {
    const m = VERSION_RE.exec(name ?? '');
    if (!m)
      throw new RpcError(grpc.status.INVALID_ARGUMENT, `Invalid resource field value in the request: name '${name}'.`);
    const secret = getSecret(m[1]!);
    const ref = m[2]!;
    let n: number | undefined;
    if (/^\d+$/.test(ref)) n = Number(ref);
    else if (ref === 'latest') n = secret.versions.size ? Math.max(...secret.versions.keys()) : undefined;
    else n = secret.aliases[ref];
    const version = n === undefined ? undefined : secret.versions.get(n);
    if (!version) throw new RpcError(grpc.status.NOT_FOUND, `Secret Version [${name}] not found.`);
    return { secret, version };
  }

  const secretOut = (s: FakeSecret) => ({
    name: s.name,
    replication: s.replication,
    create_time: ts(s.createTime),
    labels: { ...s.labels },
    annotations: { ...s.annotations },
    etag: s.etag,
    version_aliases: Object.fromEntries(Object.entries(s.aliases).map(([k, v]) => [k, String(v)])),
  });

  const versionOut = (s: FakeSecret, v: FakeVersion) => ({
    name: `${s.name}/versions/${v.number}`,
    create_time: ts(v.createTime),
    ...(v.destroyTime ? { destroy_time: ts(v.destroyTime) } : {}),
    state: v.state,
    etag: v.etag,
    client_specified_payload_checksum: v.clientChecksum,
    replication_status: { automatic: {} },
  });

  function checkVersionEtag(v: FakeVersion, etag: string | undefined) {
    if (etag && etag !== v.etag)
      throw new RpcError(
        grpc.status.ABORTED,
        'The etag provided in the request does not match the current etag of the secret version.',
      );
  }

  const impl: Record<GcpMethod, { resource: (r: Req) => string; handle: (r: Req) => unknown }> = {
    CreateSecret: {
      resource: (r) => `${r.parent}/secrets/${r.secret_id}`,
      handle: (r) => {
        if (!/^projects\/[^/]+$/.test(r.parent ?? ''))
          throw new RpcError(grpc.status.INVALID_ARGUMENT, `Invalid parent '${r.parent}'.`);
        if (!/^[A-Za-z0-9_-]{1,255}$/.test(r.secret_id ?? ''))
          throw new RpcError(grpc.status.INVALID_ARGUMENT, 'Invalid secret_id.');
        if (!r.secret?.replication)
          throw new RpcError(grpc.status.INVALID_ARGUMENT, 'Secret.replication must be specified.');
        const name = `${r.parent}/secrets/${r.secret_id}`;
        if (secrets.has(name)) throw new RpcError(grpc.status.ALREADY_EXISTS, `Secret [${name}] already exists.`);
        const s: FakeSecret = {
          name,
          createTime: new Date(),
          replication: r.secret.replication,
          labels: { ...(r.secret.labels ?? {}) },
          annotations: { ...(r.secret.annotations ?? {}) },
          aliases: {},
          etag: newEtag(),
          versions: new Map(),
          nextVersion: 1,
        };
        secrets.set(name, s);
        return secretOut(s);
      },
    },
    GetSecret: { resource: (r) => r.name, handle: (r) => secretOut(getSecret(r.name)) },
    DeleteSecret: {
      resource: (r) => r.name,
      handle: (r) => {
        const s = getSecret(r.name);
        if (r.etag && r.etag !== s.etag)
          throw new RpcError(
            grpc.status.ABORTED,
            'The etag provided in the request does not match the current etag of the secret.',
          );
        secrets.delete(s.name);
        return {};
      },
    },
    UpdateSecret: {
      resource: (r) => r.secret?.name,
      handle: (r) => {
        const s = getSecret(r.secret?.name);
        const paths: string[] = r.update_mask?.paths ?? [];
        if (!paths.length) throw new RpcError(grpc.status.INVALID_ARGUMENT, 'update_mask must be specified.');
        if (r.secret.etag && r.secret.etag !== s.etag) {
          throw new RpcError(
            grpc.status.ABORTED,
            'The etag provided in the request does not match the current etag of the secret.',
          );
        }
        const next = { labels: s.labels, annotations: s.annotations, aliases: s.aliases };
        for (const p of paths) {
          if (p === 'labels') next.labels = { ...(r.secret.labels ?? {}) };
          else if (p === 'annotations') {
            const a: Record<string, string> = { ...(r.secret.annotations ?? {}) };
            let bytes = 0;
            for (const [k, v] of Object.entries(a)) {
              if (!ANNOTATION_KEY_RE.test(k))
                throw new RpcError(grpc.status.INVALID_ARGUMENT, `Invalid annotation key '${k}'.`);
              bytes += Buffer.byteLength(k) + Buffer.byteLength(v);
            }
            if (bytes > ANNOTATIONS_MAX_BYTES)
              throw new RpcError(
                grpc.status.INVALID_ARGUMENT,
                'The total size of annotations must be less than 16KiB.',
              );
            next.annotations = a;
          } else if (p === 'version_aliases' || p === 'versionAliases') {
            const a: Record<string, number> = {};
            for (const [k, raw] of Object.entries((r.secret.version_aliases ?? {}) as Record<string, string>)) {
              if (!ALIAS_RE.test(k) || k === 'latest')
                throw new RpcError(grpc.status.INVALID_ARGUMENT, `Invalid version alias '${k}'.`);
              const n = Number(raw);
              const v = s.versions.get(n);
              if (!v || v.state === 'DESTROYED') {
                throw new RpcError(
                  grpc.status.INVALID_ARGUMENT,
                  `Version alias '${k}' must refer to an existing, non-destroyed version (got ${raw}).`,
                );
              }
              a[k] = n;
            }
            next.aliases = a;
          } else {
            throw new RpcError(grpc.status.INVALID_ARGUMENT, `The fake does not support update_mask path '${p}'.`);
          }
        }
        s.labels = next.labels;
        s.annotations = next.annotations;
        s.aliases = next.aliases;
        s.etag = newEtag();
        return secretOut(s);
      },
    },
    AddSecretVersion: {
      resource: (r) => r.parent,
      handle: (r) => {
        const s = getSecret(r.parent);
        const data: Buffer = Buffer.from(r.payload?.data ?? []);
        const crc = crc32c(data);
        const sent = r.payload?.data_crc32c;
        if (sent !== undefined && sent !== null && Number(sent) !== crc) {
          throw new RpcError(
            grpc.status.INVALID_ARGUMENT,
            'Checksum mismatch: the data_crc32c does not match the payload data.',
          );
        }
        const v: FakeVersion = {
          number: s.nextVersion++,
          data,
          crc32c: crc,
          state: 'ENABLED',
          createTime: new Date(),
          etag: newEtag(),
          clientChecksum: sent !== undefined && sent !== null,
        };
        s.versions.set(v.number, v);
        return versionOut(s, v);
      },
    },
    AccessSecretVersion: {
      resource: (r) => r.name,
      handle: (r) => {
        const { secret, version } = resolveVersion(r.name);
        if (version.state !== 'ENABLED') {
          throw new RpcError(
            grpc.status.FAILED_PRECONDITION,
            `Secret Version [${secret.name}/versions/${version.number}] is in ${version.state} state.`,
          );
        }
        return {
          name: `${secret.name}/versions/${version.number}`,
          payload: { data: version.data, data_crc32c: String(version.crc32c) },
        };
      },
    },
    GetSecretVersion: {
      resource: (r) => r.name,
      handle: (r) => {
        const { secret, version } = resolveVersion(r.name);
        return versionOut(secret, version);
      },
    },
    ListSecretVersions: {
      resource: (r) => r.parent,
      handle: (r) => {
        const s = getSecret(r.parent);
        if (r.filter) throw new RpcError(grpc.status.INVALID_ARGUMENT, 'The fake does not support filters.');
        const all = [...s.versions.values()].sort((a, b) => b.number - a.number);
        const size = r.page_size && r.page_size > 0 ? Math.min(r.page_size, 25000) : 25000;
        let start = 0;
        if (r.page_token) {
          const m = /^o(\d+)$/.exec(Buffer.from(r.page_token, 'base64url').toString());
          if (!m) throw new RpcError(grpc.status.INVALID_ARGUMENT, 'Invalid page_token.');
          start = Number(m[1]);
        }
        const page = all.slice(start, start + size);
        const end = start + page.length;
        return {
          versions: page.map((v) => versionOut(s, v)),
          next_page_token: end < all.length ? Buffer.from(`o${end}`).toString('base64url') : '',
          total_size: all.length,
        };
      },
    },
    DisableSecretVersion: {
      resource: (r) => r.name,
      handle: (r) => {
        const { secret, version } = resolveVersion(r.name);
        checkVersionEtag(version, r.etag);
        if (version.state === 'DESTROYED')
          throw new RpcError(grpc.status.FAILED_PRECONDITION, `Secret Version [${r.name}] is in DESTROYED state.`);
        if (version.state !== 'DISABLED') {
          version.state = 'DISABLED';
          version.etag = newEtag();
        }
        return versionOut(secret, version);
      },
    },
    EnableSecretVersion: {
      resource: (r) => r.name,
      handle: (r) => {
        const { secret, version } = resolveVersion(r.name);
        checkVersionEtag(version, r.etag);
        if (version.state === 'DESTROYED')
          throw new RpcError(grpc.status.FAILED_PRECONDITION, `Secret Version [${r.name}] is in DESTROYED state.`);
        if (version.state !== 'ENABLED') {
          version.state = 'ENABLED';
          version.etag = newEtag();
        }
        return versionOut(secret, version);
      },
    },
    DestroySecretVersion: {
      resource: (r) => r.name,
      handle: (r) => {
        const { secret, version } = resolveVersion(r.name);
        checkVersionEtag(version, r.etag);
        if (version.state === 'DESTROYED')
          throw new RpcError(
            grpc.status.FAILED_PRECONDITION,
            `Secret Version [${r.name}] is already in DESTROYED state.`,
          );
        version.state = 'DESTROYED';
        version.data = Buffer.alloc(0);
        version.destroyTime = new Date();
        version.etag = newEtag();
        // an alias cannot point at a destroyed version
        let changed = false;
        for (const [k, n] of Object.entries(secret.aliases)) {
          if (n === version.number) {
            delete secret.aliases[k];
            changed = true;
          }
        }
        if (changed) secret.etag = newEtag();
        return versionOut(secret, version);
      },
    },
  };

  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of Object.keys(impl) as GcpMethod[]) {
    const { resource, handle } = impl[method];
    handlers[method] = (async (call: grpc.ServerUnaryCall<Req, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const req = call.request;
      const entry: LogEntry = { method, resource: String(resource(req) ?? ''), code: 'OK', at: Date.now() };
      if (method === 'UpdateSecret') entry.mask = [...(req.update_mask?.paths ?? [])];
      log.push(entry);
      try {
        const delay = latency.get(method) ?? latency.get('*') ?? 0;
        if (delay > 0) await sleep(delay);
        const hook = hooks.get(method)?.shift();
        if (hook) await hook();
        const queue = faults.get(method);
        let fault: FailOptions | undefined = queue?.[0];
        if (fault) {
          queue![0]!.left--;
          if (queue![0]!.left <= 0) queue!.shift();
        }
        if (nthFault && --nthFault.left <= 0) {
          fault = nthFault.opts;
          nthFault = undefined;
        }
        if (fault && !fault.afterApply)
          throw new RpcError(fault.code, fault.message ?? `injected ${grpc.status[fault.code]}`);
        const perm = PERMISSIONS[method];
        if (denied.has(perm)) {
          throw new RpcError(
            grpc.status.PERMISSION_DENIED,
            `Permission '${perm}' denied for resource '${entry.resource}' (or it may not exist).`,
          );
        }
        const altQueue = alters.get(method);
        const alt = fault ? undefined : altQueue?.[0];
        if (alt) {
          alt.left--;
          if (alt.left <= 0) altQueue!.shift();
        }
        const res = alt?.skipApply ? undefined : handle(req);
        if (fault?.afterApply) {
          entry.lost = true;
          throw new RpcError(fault.code, fault.message ?? `injected ${grpc.status[fault.code]} after applying`);
        }
        if (alt) entry.altered = true;
        notify(entry);
        cb(null, alt ? alt.alter(res) : res);
      } catch (e) {
        const code = e instanceof RpcError ? e.code : grpc.status.INTERNAL;
        entry.code = grpc.status[code] ?? String(code);
        notify(entry);
        cb({ code, details: e instanceof Error ? e.message : String(e) });
      }
    }) as grpc.handleUnaryCall<Req, unknown>;
  }

  const server = new grpc.Server();
  server.addService(service, handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );

  return {
    port,
    state,
    log,
    failNext(method, opts) {
      const list = faults.get(method) ?? [];
      list.push({ ...opts, left: opts.count ?? 1 });
      faults.set(method, list);
    },
    alterNext(method, alter, opts = {}) {
      const list = alters.get(method) ?? [];
      list.push({ alter, left: opts.count ?? 1, skipApply: opts.skipApply === true });
      alters.set(method, list);
    },
    setLatency(method, ms) {
      latency.set(method, ms);
    },
    beforeNext(method, fn) {
      const list = hooks.get(method) ?? [];
      list.push(fn);
      hooks.set(method, list);
    },
    failCall(n, opts) {
      nthFault = { left: n, opts };
    },
    observe(fn) {
      observers.add(fn);
      return () => observers.delete(fn);
    },
    deny(permission) {
      denied.add(permission);
    },
    allow(permission) {
      denied.delete(permission);
    },
    resetKnobs() {
      faults.clear();
      alters.clear();
      nthFault = undefined;
      latency.clear();
      hooks.clear();
      denied.clear();
      log.length = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
        // do not wait for clients that keep their channels open
        setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 200).unref();
      }),
  };
}
