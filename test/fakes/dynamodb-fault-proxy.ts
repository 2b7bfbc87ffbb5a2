/**
 * A loopback HTTP proxy in front of moto's DynamoDB that answers requests with the faults real
 * DynamoDB produces, at seeded random points (`chaos(rng, {...})`, probabilities per request):
 *   - `throttle`: 400 `ThrottlingException` or `ProvisionedThroughputExceededException` (retryable;
 *     the request never reaches moto);
 *   - `conditional`: a write (`TransactWriteItems`, `PutItem`, `UpdateItem`, `DeleteItem`) answered
 *     400 `TransactionCanceledException` with `ConditionalCheckFailed` (or
 *     `ConditionalCheckFailedException`) although its condition holds — the write never reaches moto;
 *   - `reset`: the connection is reset without an answer, the request forwarded to moto first with
 *     probability 1/2 (an applied write whose answer is lost).
 * `maxInARow` caps consecutive faults. `calm()` turns faults off. `stats` counts the faults by kind; `log` records operations and faults,
 * never a body.
 */
import { startHttpProxy } from './http-proxy.ts';

export interface DynamoChaos {
  throttle?: number;
  conditional?: number;
  reset?: number;
  /** never more than this many faulted requests in a row (the SDK's retries then always get through) */
  maxInARow?: number;
}

export interface DynamoFaultProxy {
  endpoint: string;
  log: { op: string; fault?: string }[];
  chaos(rng: { next(): number }, c: DynamoChaos): void;
  calm(): void;
  readonly stats: Record<string, number>;
  close(): Promise<void>;
}

const WRITES = new Set(['TransactWriteItems', 'PutItem', 'UpdateItem', 'DeleteItem']);
const PREFIX = 'com.amazonaws.dynamodb.v20120810#';

export async function startDynamoFaultProxy(target: string): Promise<DynamoFaultProxy> {
  const log: { op: string; fault?: string }[] = [];
  const stats: Record<string, number> = {};
  let rng: { next(): number } | null = null;
  let c: DynamoChaos = {};
  let inARow = 0;

  const proxy = await startHttpProxy(target, async ({ req, res, op, body, forward, pass }) => {
    const entry: { op: string; fault?: string } = { op };
    log.push(entry);
    const capped = c.maxInARow !== undefined && inARow >= c.maxInARow;
    const roll = () => (rng && !capped ? rng.next() : 1);
    const error = (type: string, extra: Record<string, unknown> = {}) => {
      inARow++;
      entry.fault = type;
      stats[type] = (stats[type] ?? 0) + 1;
      const text = JSON.stringify({ __type: PREFIX + type, message: 'injected by the fault proxy', ...extra });
      res.writeHead(400, {
        'content-type': 'application/x-amz-json-1.0',
        'content-length': String(Buffer.byteLength(text)),
        'x-amzn-errortype': type,
        'x-amzn-requestid': `fault-${log.length}`,
      });
      res.end(text);
    };
    if (roll() < (c.throttle ?? 0))
      return error(roll() < 0.5 ? 'ThrottlingException' : 'ProvisionedThroughputExceededException');
    if (WRITES.has(op) && roll() < (c.conditional ?? 0)) {
      if (op !== 'TransactWriteItems') return error('ConditionalCheckFailedException');
      let n = 1;
      try {
        n = (JSON.parse(body.toString('utf8')) as { TransactItems?: unknown[] }).TransactItems?.length ?? 1;
      } catch {
        // not JSON: one reason
      }
      return error('TransactionCanceledException', {
        message:
          'Transaction cancelled, please refer cancellation reasons for specific reasons [ConditionalCheckFailed]',
        CancellationReasons: Array.from({ length: n }, (_, i) =>
          i === 0 ? { Code: 'ConditionalCheckFailed', Message: 'The conditional request failed' } : { Code: 'None' },
        ),
      });
    }
    if (roll() < (c.reset ?? 0)) {
      const applied = roll() < 0.5;
      entry.fault = applied ? 'reset after apply' : 'reset';
      stats[entry.fault] = (stats[entry.fault] ?? 0) + 1;
      inARow++;
      if (applied) await forward();
      req.socket.resetAndDestroy();
      return;
    }
    inARow = 0;
    pass(await forward());
  });
  return {
    endpoint: proxy.endpoint,
    log,
    stats,
    chaos: (r, x) => {
      rng = r;
      c = x;
    },
    calm: () => {
      rng = null;
    },
    close: proxy.close,
  };
}
