/**
 * A store created by infrastructure code with a dummy value ("CHANGE_ME"): the first rotation stops
 * with ADOPT_REQUIRED naming both ways forward; `keyrotor adopt <key> --placeholder` declares it (state
 * record + audit trail); then the rotation bootstraps over it and never asks the issuer to revoke
 * anything for it. A rollback puts the placeholder back, exactly as the store held it. A value the
 * issuer knows as a key is refused as a placeholder.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { runCli, workspace } from './cli-helpers.ts';
import { startOpenAIFake, type OpenAIFake } from '../fakes/openai-admin.ts';
import { Secret } from '../../src/core/secret.ts';
import { fingerprint } from '../../src/core/fingerprint.ts';
import { fileStateRecord, fileStateText } from '../helpers/file-state.ts';
import { keyConfig, openaiIssuer } from '../helpers/config.ts';
import { openFileStore } from '../helpers/file-store.ts';

let fake: OpenAIFake;
beforeAll(async () => {
  fake = await startOpenAIFake();
});
afterAll(async () => {
  await fake?.close();
});

const MASTER = 'c3'.repeat(32);
const env = () => ({ OPENAI_ADMIN_KEY: fake.adminKey, KEYROTOR_MASTER_KEY: MASTER });
const config = (sa: string, health = ' []') =>
  keyConfig({ issuer: openaiIssuer(fake, sa), timeout: '2s', interval: '100ms', revoke: null, health });

function fileStore(dir: string) {
  return openFileStore(dir, 'app', MASTER);
}
/** what Terraform would do: a value, current, without keyrotor metadata */
async function plant(dir: string, value: string) {
  const store = await fileStore(dir);
  const rot = 'rot-20260101t000000z-00000000';
  await store.stage({ rotationId: rot, secret: Secret.of(value), meta: {} });
  await store.promote(rot);
}
const results = (s: string) => (JSON.parse(s) as { results: Array<Record<string, unknown>> }).results;
const deletes = () => fake.log.filter((e) => e.route === 'projects.apiKeys.delete').length;
const auditRecords = (dir: string) =>
  readFileSync(path.join(dir, '.keyrotor/audit/audit.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
const PLACEHOLDER = 'CHANGE_ME';

describe('a placeholder value in the store', () => {
  it('ADOPT_REQUIRED names both ways; `adopt --placeholder` then rotate bootstraps over it, revoking nothing', async () => {
    const sa = fake.state.addServiceAccount('placeholder-ok');
    const dir = workspace(config(sa.id), 'placeholder-ok');
    await plant(dir, PLACEHOLDER);
    const fp = fingerprint(Secret.of(PLACEHOLDER));

    const first = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'ph-first' });
    expect(first.code).toBe(4);
    const res = results(first.stdout)[0]!;
    expect(res).toMatchObject({ outcome: 'needs_attention', newKeyId: null, error: { code: 'ADOPT_REQUIRED' } });
    const hint = (res.error as { hint: string }).hint;
    expect(hint).toContain('keyrotor adopt app --key-id <issuer key id>');
    expect(hint).toContain('keyrotor adopt app --placeholder');

    const neither = await runCli(['adopt', 'app'], { cwd: dir, env: env(), name: 'ph-adopt-neither' });
    expect(neither.code).toBe(2);
    expect(neither.stderr).toMatch(/^keyrotor: USAGE: adopt needs exactly one of --key-id <id> .* or --placeholder/m);

    const a = await runCli(['adopt', 'app', '--placeholder', '--reason', 'terraform dummy'], {
      cwd: dir,
      env: env(),
      name: 'ph-adopt',
    });
    expect(a.code, a.stderr).toBe(0);
    expect(a.stdout).toContain(`app: the current value (${fp}) is declared a placeholder`);
    const state = fileStateRecord(path.join(dir, '.keyrotor'), 'app');
    expect(state?.providerState[`placeholder.${fp}`]).toMatch(/^\d{4}-/);
    expect(auditRecords(dir).filter((r) => r.type === 'adopt')).toEqual([
      expect.objectContaining({ key: 'app', placeholder: true, oldFingerprint: fp, reason: 'terraform dummy' }),
    ]);

    const deletesBefore = deletes();
    const r = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'ph-rotate' });
    expect(r.code, r.stderr).toBe(0);
    const done = results(r.stdout)[0]!;
    expect(done).toMatchObject({ outcome: 'rotated', oldKeyId: null, bootstrap: true, placeholder: true });
    expect(deletes()).toBe(deletesBefore); // the issuer's revoke was never called
    const cur = await (await fileStore(dir)).readCurrent();
    expect(cur?.meta.issuerKeyId).toBe(done.newKeyId);
    expect(auditRecords(dir).find((x) => x.type === 'result' && x.rotationId === done.rotationId)).toMatchObject({
      outcome: 'rotated',
      placeholder: true,
    });

    // from now on ordinary rotations: the bootstrapped key is revoked by the next one
    const next = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'ph-next' });
    expect(next.code, next.stderr).toBe(0);
    expect(results(next.stdout)[0]).toMatchObject({ outcome: 'rotated', oldKeyId: done.newKeyId });
    expect(deletes()).toBe(deletesBefore + 1);
  });

  it('a rollback puts the placeholder back as the store held it, and revokes only the new key', async () => {
    const sa = fake.state.addServiceAccount('placeholder-rollback');
    const dir = workspace(
      config(sa.id, `\n      - { type: command, command: [ "false" ], timeout: 1s, interval: 100ms }`),
      'ph-rb',
    );
    await plant(dir, PLACEHOLDER);
    const a = await runCli(['adopt', 'app', '--placeholder'], { cwd: dir, env: env(), name: 'ph-rb-adopt' });
    expect(a.code, a.stderr).toBe(0);
    const r = await runCli(['rotate', '--now', 'app', '--json'], { cwd: dir, env: env(), name: 'ph-rb-rotate' });
    expect(r.code, r.stderr).toBe(1);
    const res = results(r.stdout)[0]!;
    expect(res).toMatchObject({ outcome: 'rolled_back', oldKeyId: null, error: { code: 'GATE_TIMEOUT' } });
    const cur = await (await fileStore(dir)).readCurrent();
    expect(cur?.secret.reveal()).toBe(PLACEHOLDER);
    expect(fake.state.liveKeys().some((k) => k.id === res.newKeyId)).toBe(false); // the new key was discarded
  });

  it('a value the issuer knows as a key is refused as a placeholder', async () => {
    const sa = fake.state.addServiceAccount('placeholder-refused');
    const real = fake.state.plantKey({ owner: { type: 'service_account', serviceAccountId: sa.id }, name: 'by hand' });
    const dir = workspace(config(sa.id), 'ph-refused');
    await plant(dir, real.value);
    const a = await runCli(['adopt', 'app', '--placeholder'], { cwd: dir, env: env(), name: 'ph-refused-adopt' });
    expect(a.code).toBe(2);
    expect(a.stderr).toContain(`matches issuer key ${real.id}: it is a key, not a placeholder (use --key-id)`);
    expect(fileStateText(path.join(dir, '.keyrotor'), 'app')).not.toContain('placeholder.'); // nothing declared
  });
});
