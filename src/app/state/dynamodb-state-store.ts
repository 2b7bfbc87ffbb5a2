/**
 * StateStore in DynamoDB (`state: { type: dynamodb, table, region?, endpoint? }`).
 * `@aws-sdk/client-dynamodb` is imported on first use only.
 *
 * Table (fixed; `keyrotor state init` creates it, deploy recipes may too): `pk` (S, HASH), `sk`
 * (S, RANGE), PAY_PER_REQUEST, optional TTL attribute `ttl` (garbage only, never lease expiry).
 * Items:
 *   pk `meta`          sk `schema`  version (N)                              written by state init
 *   pk `key#<name>`    sk `record`  format, record (JSON text), rev (N), updatedAt
 *   pk `key#<name>`    sk `lease`   owner, token (N), expiresAt (N, ms), acquiredAt (N, ms), holder
 *                                   (JSON: the holder process's host, boot id, pid namespace, pid, start time)
 *   pk `audit`         sk `rec#<seq, 12 digits>`  line (canonical JSON), hash    the audit trail
 *   pk `audit`         sk `head`    seq (N), hash: each append is one TransactWriteItems of the new
 *                                   record (attribute_not_exists) and the head (seq = the one read),
 *                                   so two writers can never fork the chain
 *   pk `outbox`        sk `e#<id>`  webhook (N), webhookName, body, createdAt, attempts (N): a pending
 *                                   webhook notification; delivered or given up: `done` is set, the
 *                                   body removed and `ttl` set 7 days ahead (no DeleteItem needed)
 *
 * Leases: one conditional UpdateItem grants the lease (`attribute_not_exists(pk) OR expiresAt <= :now`)
 * and adds 1 to `token` (the fencing token) on every grant; the same owner asking again extends its
 * lease (`owner = :me`) and keeps the token. The item is never deleted, so tokens only grow. An
 * unexpired lease whose holder is a process of this host and boot that provably died (holder.ts) is
 * taken over at once, conditional on the token and owner that were judged (`ADD token 1`). DynamoDB has no server clock: `:now` and `expiresAt` are the writers'
 * clocks, so a worker whose clock runs ahead by d takes over a lease d early (see
 * docs/state-backends.md for the skew tolerated). Fencing makes that safe for the data: every write
 * of a holder is a TransactWriteItems of a ConditionCheck `token = :t` on the lease item and a Put of
 * the record conditional on its revision (optimistic concurrency for read-modify-write); a write with
 * audit entries adds one Put per audit record and the head's Put to the same transaction.
 */
import { KeyrotorError } from '../../core/errors.ts';
import type { Clock } from '../../core/clock.ts';
import { systemClock } from '../../core/clock.ts';
import type {
  Fence,
  KeyRecord,
  Lease,
  LeaseHolder,
  ClaimCandidate,
  OutboxEntry,
  RecordBatch,
  StateInitResult,
  StateStore,
} from '../../core/ports.ts';
import { byAge, checkOutboxEntry, checkOutboxId, parseOutboxEntry } from './outbox.ts';
import type { DynamoStateConfig } from './config.ts';
import {
  checkKeyName,
  decodeRecord,
  emptyRecord,
  encodeRecord,
  leaseLost,
  providerStateIfAbsent,
  recordWriters,
} from './record.ts';
import { STATE_FORMAT } from './schema.ts';
import { heldByDeadLocalProcess, holderJson } from './holder.ts';
import type * as DDB from '@aws-sdk/client-dynamodb';
import { chainRecord, GENESIS, recordLine, type AuditEntry, type AuditRecord } from '../audit/record.ts';
import type { AuditLog } from '../audit/sink.ts';
import { readChain, verifyChain, type StoredChain } from '../audit/chain.ts';

export const DYNAMODB_LAYOUT_VERSION = 1;
/** a record item is at most 400 KB; stay well below */
const MAX_RECORD_BYTES = 350_000;
/** DynamoDB's limit of items in one TransactWriteItems */
const MAX_TRANSACT_ITEMS = 100;

type Item = Record<string, DDB.AttributeValue>;
const S = (v: string): DDB.AttributeValue => ({ S: v });
const N = (v: number): DDB.AttributeValue => ({ N: String(v) });
const str = (i: Item | undefined, k: string) => i?.[k]?.S;
const num = (i: Item | undefined, k: string) => (i?.[k]?.N === undefined ? undefined : Number(i[k].N));

export interface DynamoStateStoreOptions {
  clock?: Clock;
}

/** errors that refuse a request before DynamoDB applies it, because of load */
const THROTTLED: ReadonlySet<string> = new Set([
  'ThrottlingException',
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
]);
/** rounds of the SDK's attempts (maxAttempts each) for a throttled request: pauses 0.2 + 0.4 + 0.8 s */
const THROTTLED_ROUNDS = 3;

/** a lease grant to a new owner: owner, expiry, grant time and holder set, the fencing token bumped */
const GRANT = {
  UpdateExpression: 'SET #o = :o, expiresAt = :exp, acquiredAt = :now, holder = :h ADD #t :one',
  ExpressionAttributeNames: { '#o': 'owner', '#t': 'token' },
} as const;

function grantValues(owner: string, now: number, ttlMs: number, holder: string): Item {
  return { ':o': S(owner), ':exp': N(now + ttlMs), ':now': N(now), ':h': S(holder), ':one': N(1) };
}

export function createDynamoStateStore(
  cfg: DynamoStateConfig,
  env: NodeJS.ProcessEnv,
  opts: DynamoStateStoreOptions = {},
): StateStore & { auditLog(): AuditLog } {
  const clock = opts.clock ?? systemClock;
  const table = cfg.table;
  const label = `dynamodb:${table}${cfg.region ? ` (${cfg.region})` : ''}`;
  const pk = (keyName: string) => `key#${keyName}`;

  let sdkP: Promise<{ sdk: typeof DDB; client: DDB.DynamoDBClient }> | undefined;
  const sdk = () =>
    (sdkP ??= import('@aws-sdk/client-dynamodb').then((m) => {
      const region = cfg.region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION;
      const endpoint = cfg.endpoint ?? env.AWS_ENDPOINT_URL_DYNAMODB ?? env.AWS_ENDPOINT_URL;
      const client = new m.DynamoDBClient({
        ...(region ? { region } : {}),
        ...(endpoint ? { endpoint } : {}),
        maxAttempts: 4,
      });
      return { sdk: m, client };
    }));

  const nameOf = (e: unknown) => (e as { name?: string }).name ?? '';

  function mapError(e: unknown, doing: string): KeyrotorError {
    if (e instanceof KeyrotorError) return e;
    const name = nameOf(e);
    const msg = e instanceof Error ? e.message : String(e);
    const at = `DynamoDB table ${table}`;
    if (name === 'ResourceNotFoundException')
      return new KeyrotorError('STATE_NOT_INITIALIZED', `${at} does not exist (${doing})`, {
        cause: e,
        hint: 'run `keyrotor state init` once, or create the table from the deploy recipe (pk S HASH, sk S RANGE)',
      });
    if (
      name === 'AccessDeniedException' ||
      name === 'UnrecognizedClientException' ||
      name === 'InvalidSignatureException'
    )
      return new KeyrotorError('STATE_UNAVAILABLE', `${at}: access denied while ${doing} (${name})`, {
        cause: e,
        hint: 'grant the role the DynamoDB actions listed in docs/state-backends.md on this table',
      });
    if (/Could not load credentials|Region is missing/i.test(msg))
      return new KeyrotorError('STATE_UNAVAILABLE', `${at}: ${msg.split('\n')[0]} (${doing})`, {
        cause: e,
        hint: 'set state.region (or AWS_REGION) and give the process AWS credentials',
      });
    const code = (e as { code?: string }).code ?? '';
    const throttled = ['ProvisionedThroughputExceededException', 'ThrottlingException', 'RequestLimitExceeded'];
    const network = ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'TimeoutError'];
    return new KeyrotorError(
      'STATE_UNAVAILABLE',
      `${at}: ${doing} failed (${name || code || 'error'}: ${msg.split('\n')[0]})`,
      {
        cause: e,
        retryable:
          throttled.includes(name) ||
          network.includes(code) ||
          network.includes(name) ||
          name === 'InternalServerError',
      },
    );
  }

  async function send<T>(doing: string, make: (m: typeof DDB, c: DDB.DynamoDBClient) => Promise<T>): Promise<T> {
    const { sdk: m, client } = await sdk();
    for (let round = 0; ; round++) {
      try {
        return await make(m, client);
      } catch (e) {
        // every attempt the SDK made was throttled: DynamoDB refuses a throttled request before applying
        // it, so asking again is safe; a few more rounds, each after a longer pause, before the state
        // counts as unavailable (a rotation must not stop half-way on a burst of throttling)
        const name = (e as { name?: unknown } | null)?.name;
        if (round < THROTTLED_ROUNDS && typeof name === 'string' && THROTTLED.has(name)) {
          await new Promise((r) => setTimeout(r, 200 * 2 ** round));
          continue;
        }
        throw mapError(e, doing);
      }
    }
  }

  let readyP: Promise<void> | undefined;
  const ready = () =>
    (readyP ??= (async () => {
      const r = await send('checking the table', (m, c) =>
        c.send(
          new m.GetItemCommand({ TableName: table, Key: { pk: S('meta'), sk: S('schema') }, ConsistentRead: true }),
        ),
      );
      const v = num(r.Item, 'version');
      if (v === undefined)
        throw new KeyrotorError('STATE_NOT_INITIALIZED', `DynamoDB table ${table} is not initialised for keyrotor`, {
          hint: 'run `keyrotor state init` once',
        });
      if (v > DYNAMODB_LAYOUT_VERSION)
        throw new KeyrotorError(
          'STATE_VERSION',
          `DynamoDB table ${table} has layout version ${v}, written by a newer keyrotor (this one knows ${DYNAMODB_LAYOUT_VERSION})`,
          { hint: 'upgrade keyrotor to the version that initialised the table' },
        );
    })().catch((e: unknown) => {
      readyP = undefined;
      throw e;
    }));

  const itemName = (keyName: string) => `DynamoDB table ${table} item "${pk(keyName)}"/record`;

  async function readItem(keyName: string): Promise<{ record: KeyRecord; rev: number } | null> {
    const r = await send(`reading the state of key "${keyName}"`, (m, c) =>
      c.send(
        new m.GetItemCommand({ TableName: table, Key: { pk: S(pk(keyName)), sk: S('record') }, ConsistentRead: true }),
      ),
    );
    if (!r.Item) return null;
    let obj: unknown;
    try {
      obj = JSON.parse(str(r.Item, 'record') ?? '');
    } catch (e) {
      throw new KeyrotorError('STATE_UNREADABLE', `${itemName(keyName)} is unreadable: not valid JSON`, { cause: e });
    }
    return {
      record: decodeRecord(keyName, str(r.Item, 'format'), obj, itemName(keyName)),
      rev: num(r.Item, 'rev') ?? 0,
    };
  }

  /** the audit head, read consistently (absent before the first append) */
  async function auditHead(): Promise<{ item: Item | undefined; seq: number; hash: string }> {
    const h = await send('reading the audit head', (m, c) =>
      c.send(new m.GetItemCommand({ TableName: table, Key: { pk: S('audit'), sk: S('head') }, ConsistentRead: true })),
    );
    return { item: h.Item, seq: num(h.Item, 'seq') ?? 0, hash: str(h.Item, 'hash') ?? GENESIS };
  }

  /**
   * The transaction items that chain `entries` onto the head read before: one Put per record (only if
   * that seq is free) and the head's Put (only if it still names the seq read), so two writers can
   * never fork the chain: the loser's whole transaction is cancelled and it chains onto the winner.
   */
  function auditItems(entries: readonly AuditEntry[], head: Awaited<ReturnType<typeof auditHead>>) {
    let prev = head.seq > 0 ? { seq: head.seq, hash: head.hash } : null;
    const records: AuditRecord[] = [];
    for (const e of entries) {
      const rec = chainRecord(e, prev);
      records.push(rec);
      prev = rec;
    }
    const last = records[records.length - 1]!;
    const items: DDB.TransactWriteItem[] = records.map((rec) => ({
      Put: {
        TableName: table,
        Item: { pk: S('audit'), sk: S(seqKey(rec.seq)), line: S(recordLine(rec).trimEnd()), hash: S(rec.hash) },
        ConditionExpression: 'attribute_not_exists(pk)',
      },
    }));
    items.push({
      Put: {
        TableName: table,
        Item: { pk: S('audit'), sk: S('head'), seq: N(last.seq), hash: S(last.hash) },
        ...(head.item
          ? { ConditionExpression: 'seq = :ps', ExpressionAttributeValues: { ':ps': N(head.seq) } }
          : { ConditionExpression: 'attribute_not_exists(pk)' }),
      },
    });
    return { records, items };
  }

  async function update(
    keyName: string,
    fn: (r: KeyRecord) => void,
    fence?: Fence,
    audit?: readonly AuditEntry[],
  ): Promise<void> {
    checkKeyName(keyName);
    await ready();
    // one TransactWriteItems holds the lease check, the record, each audit record and the head
    if (audit && audit.length + 3 > MAX_TRANSACT_ITEMS)
      throw new KeyrotorError('INTERNAL', `too many audit records for one DynamoDB transaction (${audit.length})`);
    for (let attempt = 0; attempt < 30; attempt++) {
      // optimistic concurrency: after a lost race, back off a little (jittered) and read again
      if (attempt > 0) await new Promise((r) => setTimeout(r, Math.random() * Math.min(200, 10 * 2 ** attempt)));
      const cur = await readItem(keyName);
      const r = cur ? cur.record : emptyRecord(keyName);
      fn(r);
      const text = encodeRecord(r);
      if (Buffer.byteLength(text) > MAX_RECORD_BYTES)
        throw new KeyrotorError('INTERNAL', `the state record of key "${keyName}" is too large for a DynamoDB item`);
      const put: DDB.Put = {
        TableName: table,
        Item: {
          pk: S(pk(keyName)),
          sk: S('record'),
          format: S(STATE_FORMAT),
          record: S(text),
          rev: N((cur?.rev ?? 0) + 1),
          updatedAt: S(new Date(clock.now()).toISOString()),
        },
        ...(cur
          ? { ConditionExpression: 'rev = :rev', ExpressionAttributeValues: { ':rev': N(cur.rev) } }
          : { ConditionExpression: 'attribute_not_exists(pk)' }),
      };
      const chained = audit?.length ? auditItems(audit, await auditHead()) : undefined;
      if (
        chained &&
        Buffer.byteLength(text) + chained.records.reduce((n, r) => n + recordLine(r).length, 0) > 3_500_000
      )
        throw new KeyrotorError(
          'INTERNAL',
          `the state write of key "${keyName}" is too large for one DynamoDB transaction`,
        );
      try {
        const { sdk: m, client } = await sdk();
        if (!fence && !chained) {
          await client.send(new m.PutItemCommand(put));
          return;
        }
        const items: DDB.TransactWriteItem[] = [];
        if (fence)
          items.push({
            ConditionCheck: {
              TableName: table,
              Key: { pk: S(pk(keyName)), sk: S('lease') },
              ConditionExpression: '#t = :t',
              ExpressionAttributeNames: { '#t': 'token' },
              ExpressionAttributeValues: { ':t': N(fence.token) },
            },
          });
        items.push({ Put: put });
        if (chained) items.push(...chained.items);
        await client.send(new m.TransactWriteItemsCommand({ TransactItems: items }));
        return;
      } catch (e) {
        const name = nameOf(e);
        if (name === 'ConditionalCheckFailedException') continue; // the record changed: read again
        if (name === 'TransactionCanceledException') {
          const reasons = (e as { CancellationReasons?: { Code?: string }[] }).CancellationReasons ?? [];
          const at = fence ? 1 : 0;
          const leaseFailed = fence !== undefined && reasons[0]?.Code === 'ConditionalCheckFailed';
          const recordFailed = reasons[at]?.Code === 'ConditionalCheckFailed';
          const auditFailed = reasons.slice(at + 1).some((x) => x.Code === 'ConditionalCheckFailed');
          if (fence && (leaseFailed || (!recordFailed && !auditFailed && !(await tokenIs(keyName, fence.token)))))
            throw leaseLost(keyName, fence, 'the lease was granted again');
          continue; // the record changed, another writer appended to the audit trail, or a conflict: read again
        }
        if (name === 'TransactionConflictException') continue;
        throw mapError(e, `writing the state of key "${keyName}"`);
      }
    }
    throw new KeyrotorError(
      'STATE_UNAVAILABLE',
      `DynamoDB table ${table}: the state of key "${keyName}" keeps changing`,
      {
        retryable: true,
      },
    );
  }

  async function leaseItem(keyName: string): Promise<Item | undefined> {
    const r = await send(`reading the lease of key "${keyName}"`, (m, c) =>
      c.send(
        new m.GetItemCommand({ TableName: table, Key: { pk: S(pk(keyName)), sk: S('lease') }, ConsistentRead: true }),
      ),
    );
    return r.Item;
  }

  async function tokenIs(keyName: string, token: number): Promise<boolean> {
    return num(await leaseItem(keyName), 'token') === token;
  }

  function makeLease(keyName: string, owner: string, ttlMs: number, token: number, expiresAt: number): Lease {
    let exp = expiresAt;
    const key = { pk: S(pk(keyName)), sk: S('lease') };
    return {
      owner,
      token,
      get expiresAt() {
        return exp;
      },
      async renew() {
        const next = clock.now() + ttlMs;
        try {
          await send(`renewing the lease of key "${keyName}"`, (m, c) =>
            c.send(
              new m.UpdateItemCommand({
                TableName: table,
                Key: key,
                UpdateExpression: 'SET expiresAt = :exp',
                ConditionExpression: '#t = :t',
                ExpressionAttributeNames: { '#t': 'token' },
                ExpressionAttributeValues: { ':exp': N(next), ':t': N(token) },
              }),
            ),
          );
        } catch (e) {
          if (nameOf((e as { cause?: unknown }).cause) === 'ConditionalCheckFailedException')
            throw leaseLost(keyName, { token }, 'renewal found a newer grant');
          throw e;
        }
        exp = next;
      },
      async release() {
        try {
          await send(`releasing the lease of key "${keyName}"`, (m, c) =>
            c.send(
              new m.UpdateItemCommand({
                TableName: table,
                Key: key,
                UpdateExpression: 'SET expiresAt = :zero',
                ConditionExpression: '#t = :t',
                ExpressionAttributeNames: { '#t': 'token' },
                ExpressionAttributeValues: { ':zero': N(0), ':t': N(token) },
              }),
            ),
          );
        } catch (e) {
          if (nameOf((e as { cause?: unknown }).cause) === 'ConditionalCheckFailedException') return; // not ours any more
          throw e;
        }
      },
    };
  }

  /** Take over the grant `seen` (its holder died): conditional on its owner and token; undefined if it changed. */
  async function takeOver(
    keyName: string,
    owner: string,
    ttlMs: number,
    holder: string,
    seen: { owner: string; token: number | undefined },
  ): Promise<Lease | undefined> {
    if (seen.token === undefined) return undefined;
    const now = clock.now();
    try {
      const r = await send(`taking over the lease of key "${keyName}" from a dead process`, (m, c) =>
        c.send(
          new m.UpdateItemCommand({
            TableName: table,
            Key: { pk: S(pk(keyName)), sk: S('lease') },
            ...GRANT,
            ConditionExpression: '#t = :seenT AND #o = :seenO',
            ExpressionAttributeValues: {
              ...grantValues(owner, now, ttlMs, holder),
              ':seenT': N(seen.token!),
              ':seenO': S(seen.owner),
            },
            ReturnValues: 'ALL_NEW',
          }),
        ),
      );
      return makeLease(keyName, owner, ttlMs, num(r.Attributes, 'token') ?? 0, now + ttlMs);
    } catch (e) {
      if (nameOf((e as { cause?: unknown }).cause) !== 'ConditionalCheckFailedException') throw e;
      return undefined;
    }
  }

  const seqKey = (n: number) => `rec#${String(n).padStart(12, '0')}`;

  async function loadChain(): Promise<StoredChain> {
    await ready();
    // head first: records appended after it are ignored, so the pair is consistent
    const h = await send('reading the audit head', (m, c) =>
      c.send(new m.GetItemCommand({ TableName: table, Key: { pk: S('audit'), sk: S('head') }, ConsistentRead: true })),
    );
    const head = h.Item ? { seq: num(h.Item, 'seq') ?? 0, hash: str(h.Item, 'hash') ?? GENESIS } : null;
    const lines: string[] = [];
    let start: Item | undefined;
    do {
      const r: DDB.QueryCommandOutput = await send('reading the audit trail', (m, c) =>
        c.send(
          new m.QueryCommand({
            TableName: table,
            ConsistentRead: true,
            KeyConditionExpression: 'pk = :a AND begins_with(sk, :r)',
            ExpressionAttributeValues: { ':a': S('audit'), ':r': S('rec#') },
            ...(start ? { ExclusiveStartKey: start } : {}),
          }),
        ),
      );
      for (const i of r.Items ?? []) {
        const seq = Number((str(i, 'sk') ?? '').slice(4));
        if (!head || seq <= head.seq) lines.push(str(i, 'line') ?? '');
      }
      start = r.LastEvaluatedKey;
    } while (start);
    return { lines, head };
  }

  function auditLog(): AuditLog {
    const where = `${label} audit trail`;
    return {
      label: where,
      file: where,
      trail: label,
      async append(entry): Promise<AuditRecord> {
        await ready();
        for (let attempt = 0; attempt < 20; attempt++) {
          const h = await send('reading the audit head', (m, c) =>
            c.send(
              new m.GetItemCommand({ TableName: table, Key: { pk: S('audit'), sk: S('head') }, ConsistentRead: true }),
            ),
          );
          const prevSeq = num(h.Item, 'seq') ?? 0;
          const rec = chainRecord(entry, prevSeq > 0 ? { seq: prevSeq, hash: str(h.Item, 'hash') ?? GENESIS } : null);
          try {
            const { sdk: m, client } = await sdk();
            await client.send(
              new m.TransactWriteItemsCommand({
                TransactItems: [
                  {
                    Put: {
                      TableName: table,
                      Item: {
                        pk: S('audit'),
                        sk: S(seqKey(rec.seq)),
                        line: S(recordLine(rec).trimEnd()),
                        hash: S(rec.hash),
                      },
                      ConditionExpression: 'attribute_not_exists(pk)',
                    },
                  },
                  {
                    Put: {
                      TableName: table,
                      Item: { pk: S('audit'), sk: S('head'), seq: N(rec.seq), hash: S(rec.hash) },
                      ...(h.Item
                        ? { ConditionExpression: 'seq = :ps', ExpressionAttributeValues: { ':ps': N(prevSeq) } }
                        : { ConditionExpression: 'attribute_not_exists(pk)' }),
                    },
                  },
                ],
              }),
            );
            return rec;
          } catch (e) {
            const name = nameOf(e);
            if (name === 'TransactionCanceledException' || name === 'TransactionConflictException') {
              await new Promise((r) => setTimeout(r, 5 + Math.random() * 20 * (attempt + 1)));
              continue; // another writer appended first: chain onto its record
            }
            throw mapError(e, 'appending to the audit trail');
          }
        }
        throw new KeyrotorError('STATE_UNAVAILABLE', `${where}: too many concurrent appends`, { retryable: true });
      },
      async read() {
        return readChain(await loadChain());
      },
      async importChain(records) {
        if (records.length === 0) return;
        await ready();
        const h = await send('reading the audit head', (m, c) =>
          c.send(
            new m.GetItemCommand({ TableName: table, Key: { pk: S('audit'), sk: S('head') }, ConsistentRead: true }),
          ),
        );
        if (h.Item) throw new KeyrotorError('USAGE', `${where} is not empty; the imported audit chain was not written`);
        // the records first (invisible until the head names them), then the head, created only once
        for (const r of records)
          await send('importing the audit trail', (m, c) =>
            c.send(
              new m.PutItemCommand({
                TableName: table,
                Item: { pk: S('audit'), sk: S(seqKey(r.seq)), line: S(recordLine(r).trimEnd()), hash: S(r.hash) },
              }),
            ),
          );
        const last = records[records.length - 1]!;
        try {
          await send('importing the audit head', (m, c) =>
            c.send(
              new m.PutItemCommand({
                TableName: table,
                Item: { pk: S('audit'), sk: S('head'), seq: N(last.seq), hash: S(last.hash) },
                ConditionExpression: 'attribute_not_exists(pk)',
              }),
            ),
          );
        } catch (e) {
          if (nameOf((e as { cause?: unknown }).cause) === 'ConditionalCheckFailedException')
            throw new KeyrotorError(
              'USAGE',
              `${where} was appended to during the import; the imported chain is not used`,
            );
          throw e;
        }
      },
      async verify() {
        return verifyChain(where, await loadChain());
      },
    };
  }

  return {
    label,
    auditTrail: label,
    auditLog,

    async read(keyName) {
      checkKeyName(keyName);
      await ready();
      return (await readItem(keyName))?.record ?? null;
    },

    ...recordWriters(update, clock),
    setProviderStateIfAbsent: providerStateIfAbsent(update),

    async acquire(keyName: string, owner: string, ttlMs: number): Promise<Lease | LeaseHolder> {
      checkKeyName(keyName);
      if (!Number.isFinite(ttlMs) || ttlMs <= 0)
        throw new KeyrotorError('INTERNAL', `lease: ttl must be a positive number of ms (got ${ttlMs})`);
      if (!owner) throw new KeyrotorError('INTERNAL', 'lease: owner must not be empty');
      await ready();
      const holder = holderJson();
      for (let attempt = 0; attempt < 5; attempt++) {
        const now = clock.now();
        const grant = async (sameOwner: boolean) => {
          try {
            const r = await send(`acquiring the lease of key "${keyName}"`, (m, c) =>
              c.send(
                new m.UpdateItemCommand({
                  TableName: table,
                  Key: { pk: S(pk(keyName)), sk: S('lease') },
                  // the same owner asking again extends its lease and keeps its token; a new owner gets token + 1
                  ...(sameOwner
                    ? {
                        UpdateExpression: 'SET expiresAt = :exp',
                        ConditionExpression: '#o = :o',
                        ExpressionAttributeNames: { '#o': 'owner' },
                        ExpressionAttributeValues: { ':o': S(owner), ':exp': N(now + ttlMs) },
                      }
                    : {
                        ...GRANT,
                        ConditionExpression: 'attribute_not_exists(pk) OR expiresAt <= :now',
                        ExpressionAttributeValues: grantValues(owner, now, ttlMs, holder),
                      }),
                  ReturnValues: 'ALL_NEW',
                }),
              ),
            );
            return makeLease(keyName, owner, ttlMs, num(r.Attributes, 'token') ?? 0, now + ttlMs);
          } catch (e) {
            if (nameOf((e as { cause?: unknown }).cause) !== 'ConditionalCheckFailedException') throw e;
            return undefined;
          }
        };
        const got = (await grant(false)) ?? (await grant(true));
        if (got) return got;
        const held = await leaseItem(keyName);
        const exp = num(held, 'expiresAt') ?? 0;
        // held by this very owner (its grant was applied but the answer was lost, or a retry was refused):
        // not someone else's lease, so ask again instead of reporting ourselves as the holder
        if (!held || exp <= clock.now() || str(held, 'owner') === owner) continue;
        const heldBy = str(held, 'owner') ?? 'unknown';
        if (!heldByDeadLocalProcess(str(held, 'holder'))) return { owner: heldBy, expiresAt: exp };
        // its holder, a process of this host and boot, is dead: take that very grant over (token + 1)
        const took = await takeOver(keyName, owner, ttlMs, holder, { owner: heldBy, token: num(held, 'token') });
        if (took) return took;
        // granted to someone else in between: judge again
      }
      throw new KeyrotorError('LOCKED', `lease on key "${keyName}" is contended; try again`, { retryable: true });
    },

    async readMany(keyNames: string[]): Promise<RecordBatch> {
      for (const k of keyNames) checkKeyName(k);
      await ready();
      // GetItem, 16 at a time (BatchGetItem would need one more IAM action for little gain)
      const readAt = clock.now();
      const records = new Map<string, KeyRecord | null | 'unreadable'>();
      let next = 0;
      const worker = async () => {
        while (next < keyNames.length) {
          const k = keyNames[next++]!;
          try {
            records.set(k, (await readItem(k))?.record ?? null);
          } catch (e) {
            if (!(e instanceof KeyrotorError) || e.code !== 'STATE_UNREADABLE') throw e;
            records.set(k, 'unreadable');
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(16, keyNames.length) }, worker));
      return { records: new Map(keyNames.map((k) => [k, records.get(k) ?? null])), readAt };
    },

    /**
     * DynamoDB has no SKIP LOCKED: conditional grants in due order (a few at a time), skipping each
     * that fails its condition (held by another worker, or granted to anyone since `since`), until
     * `limit` are granted. A candidate another worker holds costs one failed conditional write.
     */
    async claim(candidates: ClaimCandidate[], owner: string, limit: number, since: number) {
      if (!owner) throw new KeyrotorError('INTERNAL', 'lease: owner must not be empty');
      for (const c of candidates) {
        checkKeyName(c.keyName);
        if (!Number.isFinite(c.ttlMs) || c.ttlMs <= 0)
          throw new KeyrotorError('INTERNAL', `lease: ttl must be a positive number of ms (got ${c.ttlMs})`);
      }
      await ready();
      const ordered = candidates.map((c, i) => ({ c, i })).sort((a, b) => a.c.dueAt - b.c.dueAt || a.i - b.i);
      const out: { keyName: string; lease: Lease }[] = [];
      let at = 0;
      while (out.length < limit && at < ordered.length) {
        const wave = ordered.slice(at, at + (limit - out.length));
        at += wave.length;
        const got = await Promise.all(
          wave.map(async ({ c }) => {
            const now = clock.now();
            try {
              const r = await send(`claiming the lease of key "${c.keyName}"`, (m, cl) =>
                cl.send(
                  new m.UpdateItemCommand({
                    TableName: table,
                    Key: { pk: S(pk(c.keyName)), sk: S('lease') },
                    ...GRANT,
                    ConditionExpression:
                      'attribute_not_exists(pk) OR (expiresAt <= :now AND (attribute_not_exists(acquiredAt) OR acquiredAt < :since))',
                    ExpressionAttributeValues: {
                      ...grantValues(owner, now, c.ttlMs, holderJson()),
                      ':since': N(since),
                    },
                    ReturnValues: 'ALL_NEW',
                  }),
                ),
              );
              const lease = makeLease(c.keyName, owner, c.ttlMs, num(r.Attributes, 'token') ?? 0, now + c.ttlMs);
              return { keyName: c.keyName, lease };
            } catch (e) {
              if (nameOf((e as { cause?: unknown }).cause) !== 'ConditionalCheckFailedException') throw e;
              return null;
            }
          }),
        );
        for (const g of got) if (g) out.push(g);
      }
      return out;
    },

    async outboxAdd(e: OutboxEntry) {
      checkOutboxEntry(e);
      await ready();
      await send(`writing outbox entry ${e.id}`, (m, c) =>
        c.send(
          new m.PutItemCommand({
            TableName: table,
            Item: {
              pk: S('outbox'),
              sk: S(`e#${e.id}`),
              webhook: N(e.webhook),
              webhookName: S(e.webhookName),
              body: S(e.body),
              createdAt: S(e.createdAt),
              attempts: N(e.attempts),
            },
          }),
        ),
      );
    },

    async outboxPending(limit?: number) {
      await ready();
      const out: OutboxEntry[] = [];
      let start: Item | undefined;
      do {
        const r: DDB.QueryCommandOutput = await send('listing the outbox', (m, c) =>
          c.send(
            new m.QueryCommand({
              TableName: table,
              ConsistentRead: true,
              KeyConditionExpression: 'pk = :o',
              FilterExpression: 'attribute_not_exists(done)',
              ExpressionAttributeValues: { ':o': S('outbox') },
              ...(start ? { ExclusiveStartKey: start } : {}),
            }),
          ),
        );
        for (const i of r.Items ?? []) {
          const e = parseOutboxEntry({
            id: str(i, 'sk')?.slice(2),
            webhook: num(i, 'webhook'),
            webhookName: str(i, 'webhookName'),
            body: str(i, 'body'),
            createdAt: str(i, 'createdAt'),
            attempts: num(i, 'attempts'),
          });
          if (e) out.push(e);
        }
        start = r.LastEvaluatedKey;
      } while (start);
      out.sort(byAge);
      return limit === undefined ? out : out.slice(0, limit);
    },

    async outboxDone(id: string) {
      checkOutboxId(id);
      await ready();
      await send(`marking outbox entry ${id} done`, async (m, c) => {
        try {
          await c.send(
            new m.UpdateItemCommand({
              TableName: table,
              Key: { pk: S('outbox'), sk: S(`e#${id}`) },
              UpdateExpression: 'SET done = :t, #ttl = :ttl REMOVE body',
              ConditionExpression: 'attribute_exists(pk)',
              ExpressionAttributeNames: { '#ttl': 'ttl' },
              ExpressionAttributeValues: {
                ':t': N(clock.now()),
                ':ttl': N(Math.floor(clock.now() / 1000) + 7 * 24 * 3600),
              },
            }),
          );
        } catch (e) {
          if (nameOf(e) !== 'ConditionalCheckFailedException') throw e;
        }
      });
    },

    async outboxAttempted(id: string, n: number) {
      checkOutboxId(id);
      await ready();
      await send(`counting attempts of outbox entry ${id}`, async (m, c) => {
        try {
          await c.send(
            new m.UpdateItemCommand({
              TableName: table,
              Key: { pk: S('outbox'), sk: S(`e#${id}`) },
              UpdateExpression: 'ADD attempts :n',
              ConditionExpression: 'attribute_exists(pk) AND attribute_not_exists(done)',
              ExpressionAttributeValues: { ':n': N(n) },
            }),
          );
        } catch (e) {
          if (nameOf(e) !== 'ConditionalCheckFailedException') throw e;
        }
      });
    },

    async keys() {
      await ready();
      const out: string[] = [];
      let start: Item | undefined;
      do {
        const r: DDB.ScanCommandOutput = await send('listing keys', (m, c) =>
          c.send(
            new m.ScanCommand({
              TableName: table,
              ConsistentRead: true,
              FilterExpression: 'sk = :r',
              ProjectionExpression: 'pk',
              ExpressionAttributeValues: { ':r': S('record') },
              ...(start ? { ExclusiveStartKey: start } : {}),
            }),
          ),
        );
        for (const i of r.Items ?? []) {
          const p = str(i, 'pk');
          if (p?.startsWith('key#')) out.push(p.slice(4));
        }
        start = r.LastEvaluatedKey;
      } while (start);
      return out.sort();
    },

    async init(): Promise<StateInitResult> {
      const steps: string[] = [];
      const desc = await send('describing the table', async (m, c) => {
        try {
          return await c.send(new m.DescribeTableCommand({ TableName: table }));
        } catch (e) {
          if (nameOf(e) === 'ResourceNotFoundException') return undefined;
          throw e;
        }
      });
      if (!desc) {
        await send('creating the table', async (m, c) => {
          try {
            await c.send(
              new m.CreateTableCommand({
                TableName: table,
                AttributeDefinitions: [
                  { AttributeName: 'pk', AttributeType: 'S' },
                  { AttributeName: 'sk', AttributeType: 'S' },
                ],
                KeySchema: [
                  { AttributeName: 'pk', KeyType: 'HASH' },
                  { AttributeName: 'sk', KeyType: 'RANGE' },
                ],
                BillingMode: 'PAY_PER_REQUEST',
              }),
            );
          } catch (e) {
            if (nameOf(e) !== 'ResourceInUseException') throw e; // created by a racing init: fine
          }
          await m.waitUntilTableExists({ client: c, maxWaitTime: 300 }, { TableName: table });
        });
        steps.push(`created table ${table} (pk S HASH, sk S RANGE, PAY_PER_REQUEST)`);
        await send('enabling TTL on attribute ttl', async (m, c) => {
          try {
            await c.send(
              new m.UpdateTimeToLiveCommand({
                TableName: table,
                TimeToLiveSpecification: { Enabled: true, AttributeName: 'ttl' },
              }),
            );
            steps.push('enabled TTL on attribute ttl (garbage collection only)');
          } catch (e) {
            if (nameOf(e) !== 'ValidationException') throw e; // already enabled
          }
        });
      } else {
        const ks = desc.Table?.KeySchema ?? [];
        const ok =
          ks.length === 2 &&
          ks.some((k) => k.AttributeName === 'pk' && k.KeyType === 'HASH') &&
          ks.some((k) => k.AttributeName === 'sk' && k.KeyType === 'RANGE');
        if (!ok)
          throw new KeyrotorError(
            'CONFIG_INVALID',
            `DynamoDB table ${table} exists with another key schema (${ks.map((k) => `${k.AttributeName} ${k.KeyType}`).join(', ')}); keyrotor needs pk (S, HASH) and sk (S, RANGE)`,
            { hint: 'point state.table at a table of its own' },
          );
      }
      const meta = await send('reading the layout version', (m, c) =>
        c.send(
          new m.GetItemCommand({ TableName: table, Key: { pk: S('meta'), sk: S('schema') }, ConsistentRead: true }),
        ),
      );
      const v = num(meta.Item, 'version') ?? 0;
      if (v > DYNAMODB_LAYOUT_VERSION)
        throw new KeyrotorError(
          'STATE_VERSION',
          `DynamoDB table ${table} has layout version ${v}, written by a newer keyrotor (this one knows ${DYNAMODB_LAYOUT_VERSION}); nothing was changed`,
          { hint: 'upgrade keyrotor to the version that initialised the table' },
        );
      if (v < DYNAMODB_LAYOUT_VERSION) {
        await send('writing the layout version', (m, c) =>
          c.send(
            new m.PutItemCommand({
              TableName: table,
              Item: { pk: S('meta'), sk: S('schema'), version: N(DYNAMODB_LAYOUT_VERSION) },
              ConditionExpression: 'attribute_not_exists(pk) OR version <= :v',
              ExpressionAttributeValues: { ':v': N(DYNAMODB_LAYOUT_VERSION) },
            }),
          ),
        );
        steps.push(`wrote layout version ${DYNAMODB_LAYOUT_VERSION}`);
      }
      readyP = undefined;
      return {
        changed: steps.length > 0,
        steps: steps.length ? steps : [`table ${table} is at layout version ${DYNAMODB_LAYOUT_VERSION}: nothing to do`],
      };
    },

    async close() {
      const p = sdkP;
      sdkP = undefined;
      if (p) (await p).client.destroy();
    },
  };
}
