/**
 * Child process for the audit tests: appends `count` records to the audit log at `file` as fast as it
 * can (count 0 = forever, until killed). Prints "ready" after the first append.
 *   node test/ops/audit-writer.ts <file> <count> <tag>
 */
import { createJsonlAuditLog } from '../../src/app/audit/jsonl.ts';

const [file, countText, tag] = process.argv.slice(2);
const count = Number(countText);
const log = createJsonlAuditLog(file!);
for (let i = 1; count === 0 || i <= count; i++) {
  await log.append({
    type: 'transition',
    time: new Date().toISOString(),
    key: `k-${tag}`,
    rotationId: `rot-${tag}`,
    state: 'verify',
    stage: 'verify',
    actor: tag,
    newKeyId: `key_${i}`,
  });
  if (i === 1) process.stdout.write('ready\n');
}
