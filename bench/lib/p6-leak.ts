/**
 * P6 (issue 15): leak response time. From the command (`keyrotor rotate --now --leaked app`, the
 * installed bin as a new process) until the leaked key is rejected by the issuer (the answer of the
 * first `GET /v1/models` with it that says 401, after its DELETE), with every request to the OpenAI
 * fake taking `latencyMs` (200 ms, a realistic figure), against the critical path:
 *
 *   node start (`node -e 0`) + create + verify the new key + delete the old key + see it rejected
 *
 * (those four requests made back to back with the SDK in this process, against the same fake, in the
 * same round). Scenarios: the file store; a 4-store fan-out (file, AWS on moto, GCP, Azure; stores
 * add no latency); and `--revoke-first` on the file store, whose critical path is node start + delete
 * + see it rejected. Rounds are interleaved (floor, node start, each scenario) so drift hits all alike.
 * Each scenario's workspace is bootstrapped once; every leak rotation then replaces the key the last
 * one made.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { existsSync } from 'node:fs';
import OpenAI from 'openai';
import { CreateSecretCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { startOpenAIFake, type OpenAIFake } from '../../test/fakes/openai-admin.ts';
import { motoSupport, startMoto, type Moto } from '../../test/fakes/moto.ts';
import { startGcpFake, type GcpFake } from '../../test/fakes/gcp-secret-manager.ts';
import { startAzureFake, type AzureFake } from '../../test/fakes/azure-key-vault.ts';
import { createGcpClient } from '../../providers/stores/gcp-secret-manager/gcp-secret-manager.store.ts';
import { median, progress, ratio, round } from './util.ts';

const REGION = 'us-east-1';
const GCP_PROJECT = 'p6-project';
const PROJECT = 'proj_p6';
const MASTER_HEX = 'cd'.repeat(32);

export interface P6Options {
  root: string;
  tmp: string;
  runs: number;
  latencyMs: number;
  /**
   * another checkout (its `dist/pkg` built) to run the same `--leaked` scenarios with, interleaved, as
   * the baseline of the same machine and load (BENCH_P6_BASE, e.g. the commit before a change)
   */
  baseRoot?: string | undefined;
}

type Scenario = 'file' | 'fanout' | 'revokeFirst' | 'fileBase' | 'fanoutBase';
const isBase = (sc: Scenario) => sc.endsWith('Base');
const isFanout = (sc: Scenario) => sc.startsWith('fanout');

interface Run {
  /** command start → the 401 for the old key was answered */
  oldKeyDeadMs: number;
  /** command start → process exit */
  exitMs: number;
  /** requests the run sent before the create (leak) or the delete (revoke-first) */
  requestsBeforeFirstWrite: number;
  requests: number;
  consumersWithoutKeyMs?: number | undefined;
}

function spawnTimed(args: string[], o: { cwd: string; env: NodeJS.ProcessEnv }) {
  return new Promise<{ t0: number; ms: number; code: number; stdout: string; stderr: string }>((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, args, { cwd: o.cwd, env: o.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ t0, ms: performance.now() - t0, code: code ?? -1, stdout, stderr }));
  });
}

export async function runP6(o: P6Options) {
  const dir = path.join(o.tmp, 'p6');
  mkdirSync(dir, { recursive: true });
  const notes: string[] = [];
  const bin = path.join(o.root, 'bin/keyrotor.js');
  if (!existsSync(path.join(o.root, 'dist/pkg/src/entrypoints/cli.js'))) {
    progress('P6: building the package (dist/pkg) for the installed bin');
    const { buildPackage } = await import('../../deploy/build-pkg.ts');
    buildPackage();
  }

  const openai: OpenAIFake = await startOpenAIFake({ projects: [PROJECT] });
  const closers: Array<() => Promise<unknown>> = [() => openai.close()];
  let moto: Moto | undefined;
  let gcp: GcpFake | undefined;
  let azure: AzureFake | undefined;
  try {
    const motoOk = motoSupport();
    if (!motoOk.available) notes.push(`fan-out without AWS: moto unavailable (${motoOk.reason})`);
    else {
      moto = await startMoto();
      closers.push(() => moto!.close());
      const c = new SecretsManagerClient({
        region: REGION,
        endpoint: moto.endpoint,
        credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      });
      for (const name of ['p6/app', 'p6/app-base'])
        await c.send(new CreateSecretCommand({ Name: name, Description: 'keyrotor bench P6' }));
      c.destroy();
    }
    gcp = await startGcpFake();
    closers.push(() => gcp!.close());
    const g = await createGcpClient({
      type: 'gcp-secret-manager',
      project: GCP_PROJECT,
      secret: 'x',
      apiEndpoint: '127.0.0.1',
      port: gcp.port,
      insecure: true,
    });
    for (const secretId of ['p6-app', 'p6-app-base'])
      await g.createSecret({ parent: `projects/${GCP_PROJECT}`, secretId, secret: { replication: { automatic: {} } } });
    await g.close();
    azure = await startAzureFake({ lifetimeMs: 60 * 60_000 });
    closers.push(() => azure!.close());

    // the Azure store in the CLI process: the same store, a stub credential and the fake's CA (as in
    // azure-shim.ts), swapped in by a resolve hook loaded with --import (fan-out runs only)
    const caFile = path.join(dir, 'azure-ca.pem');
    writeFileSync(caFile, azure.ca);
    const hooksFor = (root: string, tag: string) => {
      const distStore = pathToFileURL(
        path.join(root, 'dist/pkg/providers/stores/azure-key-vault/azure-key-vault.store.js'),
      ).href;
      const shim = path.join(dir, `p6-azure-shim-${tag}.mjs`);
      writeFileSync(
        shim,
        `import { readFileSync } from 'node:fs';
import { createAzureKeyVaultStore as real } from ${JSON.stringify(distStore)};
const ca = readFileSync(${JSON.stringify(caFile)}, 'utf8');
export function createAzureKeyVaultStore(cfg, ctx) {
  return real(cfg, ctx, {
    credential: { getToken: async () => ({ token: 'bench-token', expiresOnTimestamp: Date.now() + 3_600_000 }) },
    clientOptions: { tlsOptions: { ca }, disableChallengeResourceVerification: true, retryOptions: { maxRetries: 0 } },
  });
}
`,
      );
      const hooks = path.join(dir, `p6-azure-hooks-${tag}.mjs`);
      writeFileSync(
        hooks,
        `import { registerHooks } from 'node:module';
const SHIM = ${JSON.stringify(pathToFileURL(shim).href)};
registerHooks({
  resolve(specifier, context, next) {
    const r = next(specifier, context);
    return r.url.endsWith('/providers/stores/azure-key-vault/index.js') ? { ...r, url: SHIM, shortCircuit: true } : r;
  },
});
`,
      );
      return pathToFileURL(hooks).href;
    };
    const hooks = { own: hooksFor(o.root, 'own'), base: o.baseRoot ? hooksFor(o.baseRoot, 'base') : '' };

    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      OPENAI_ADMIN_KEY: openai.adminKey,
      KEYROTOR_MASTER_KEY: MASTER_HEX,
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      AWS_EC2_METADATA_DISABLED: 'true',
      METADATA_SERVER_DETECTION: 'none',
      KEYROTOR_LOG_LEVEL: 'warn',
    };

    const fanoutStores = (suffix: string) => `
      - { type: file }
${moto ? `      - { type: aws-secrets-manager, secretId: p6/app${suffix}, region: ${REGION}, endpoint: "${moto.endpoint}" }\n` : ''}      - { type: gcp-secret-manager, project: ${GCP_PROJECT}, secret: p6-app${suffix}, apiEndpoint: 127.0.0.1, port: ${gcp!.port}, insecure: true }
      - { type: azure-key-vault, vaultUrl: "${azure!.vaultUrl}", name: p6-app${suffix} }`;
    const stores: Record<Scenario, string> = {
      file: '[ { type: file } ]',
      revokeFirst: '[ { type: file } ]',
      fanout: fanoutStores(''),
      fileBase: '[ { type: file } ]',
      fanoutBase: fanoutStores('-base'),
    };
    const scenarios: Scenario[] = [
      'file',
      'fanout',
      'revokeFirst',
      ...(o.baseRoot ? (['fileBase', 'fanoutBase'] as const) : []),
    ];
    const work: Record<Scenario, { dir: string; current: string | null }> = {} as never;
    for (const sc of scenarios) {
      const d = path.join(dir, sc);
      mkdirSync(d, { recursive: true });
      const sa = openai.state.addServiceAccount(`p6-${sc}`).id;
      writeFileSync(
        path.join(d, 'rotation.config.yaml'),
        `version: 1
defaults:
  verify: { timeout: 20s, interval: 100ms }
  verifyRevoked: { timeout: 20s, interval: 100ms }
keys:
  - name: app
    issuer: { type: openai, project: ${PROJECT}, serviceAccount: ${sa}, baseURL: "${openai.baseURL}", timeout: 20s }
    stores: ${stores[sc]}
`,
      );
      work[sc] = { dir: d, current: null };
    }
    const cli = (sc: Scenario, extra: string[]) =>
      spawnTimed(
        [
          ...(isFanout(sc) ? ['--import', isBase(sc) ? hooks.base : hooks.own] : []),
          isBase(sc) ? path.join(o.baseRoot!, 'bin/keyrotor.js') : bin,
          'rotate',
          '--now',
          ...extra,
          'app',
          '--json',
        ],
        {
          cwd: work[sc].dir,
          env,
        },
      );
    const resultOf = (stdout: string) =>
      (
        JSON.parse(stdout) as {
          results: { outcome: string; newKeyId: string; oldKeyId: string; consumersWithoutKeyMs?: number }[];
        }
      ).results[0]!;

    // bootstrap every workspace without latency (not measured), then warm Node's compile cache once
    openai.setLatency(0);
    for (const sc of scenarios) {
      const r = await cli(sc, []);
      if (r.code !== 0) throw new Error(`P6 bootstrap of ${sc} failed (exit ${r.code}): ${r.stderr.split('\n')[0]}`);
      work[sc].current = resultOf(r.stdout).newKeyId;
    }
    await spawnTimed(['-e', '0'], { cwd: dir, env });
    openai.setLatency(o.latencyMs);

    // the floor's key: the four requests of the critical path, straight-line with the SDK
    const floorSa = openai.state.addServiceAccount('p6-floor').id;
    const admin = new OpenAI({ apiKey: null, adminAPIKey: openai.adminKey, baseURL: openai.baseURL, maxRetries: 0 });
    const keyClient = (value: string) => new OpenAI({ apiKey: value, baseURL: openai.baseURL, maxRetries: 0 });
    openai.setLatency(0);
    let floorOld = await admin.admin.organization.projects.serviceAccounts.apiKeys.create(floorSa, {
      project_id: PROJECT,
      name: 'p6-floor-0',
    });
    openai.setLatency(o.latencyMs);
    const floorRound = async (n: number) => {
      const t0 = performance.now();
      const made = await admin.admin.organization.projects.serviceAccounts.apiKeys.create(floorSa, {
        project_id: PROJECT,
        name: `p6-floor-${n}`,
      });
      await keyClient(made.value).models.list();
      const t2 = performance.now();
      await admin.admin.organization.projects.apiKeys.delete(floorOld.id, { project_id: PROJECT });
      const rejected = await keyClient(floorOld.value)
        .models.list()
        .then(
          () => false,
          (e: unknown) => (e as { status?: number }).status === 401,
        );
      if (!rejected) throw new Error('P6 floor: the deleted key still works');
      const t4 = performance.now();
      floorOld = made;
      return { fourRequestsMs: t4 - t0, deleteAndCheckMs: t4 - t2 };
    };

    const samples = {
      nodeStart: [] as number[],
      floor4: [] as number[],
      floor2: [] as number[],
      runs: { file: [], fanout: [], revokeFirst: [], fileBase: [], fanoutBase: [] } as Record<Scenario, Run[]>,
    };
    for (let n = 1; n <= o.runs; n++) {
      progress(`P6 round ${n}/${o.runs}`);
      const f = await floorRound(n);
      samples.floor4.push(f.fourRequestsMs);
      samples.floor2.push(f.deleteAndCheckMs);
      samples.nodeStart.push((await spawnTimed(['-e', '0'], { cwd: dir, env })).ms);
      for (const sc of scenarios) {
        const old = work[sc].current!;
        const from = openai.log.length;
        const r = await cli(sc, ['--leaked', ...(sc === 'revokeFirst' ? ['--revoke-first'] : [])]);
        if (r.code !== 0) throw new Error(`P6 ${sc} run ${n} failed (exit ${r.code}): ${r.stderr.split('\n')[0]}`);
        const res = resultOf(r.stdout);
        if (res.outcome !== 'rotated' || res.oldKeyId !== old) throw new Error(`P6 ${sc} run ${n}: ${res.outcome}`);
        const log = openai.log.slice(from);
        const del = log.findIndex((e) => e.route === 'projects.apiKeys.delete' && e.path.endsWith(`/${old}`));
        const dead = log.slice(del + 1).find((e) => e.route === 'models.list' && e.status === 401);
        if (del < 0 || !dead?.doneAt) throw new Error(`P6 ${sc} run ${n}: the old key was never seen rejected`);
        const firstWrite = log.findIndex((e) =>
          sc === 'revokeFirst' ? e.route === 'projects.apiKeys.delete' : e.route === 'serviceAccounts.apiKeys.create',
        );
        samples.runs[sc].push({
          oldKeyDeadMs: dead.doneAt - r.t0,
          exitMs: r.ms,
          requestsBeforeFirstWrite: firstWrite,
          requests: log.length,
          consumersWithoutKeyMs: res.consumersWithoutKeyMs,
        });
        work[sc].current = res.newKeyId;
      }
    }

    const nodeStart = median(samples.nodeStart);
    const floor4 = median(samples.floor4);
    const floor2 = median(samples.floor2);
    const leakRef = nodeStart + floor4;
    const revokeRef = nodeStart + floor2;
    const summary = (sc: Scenario, ref: number) => {
      const rs = samples.runs[sc];
      const dead = median(rs.map((r) => r.oldKeyDeadMs));
      const cw = rs.map((r) => r.consumersWithoutKeyMs).filter((x): x is number => typeof x === 'number');
      return {
        oldKeyDeadMs: round(dead, 1),
        exitMs: round(median(rs.map((r) => r.exitMs)), 1),
        criticalPathMs: round(ref, 1),
        ratio: ratio(dead, ref),
        requests: median(rs.map((r) => r.requests)),
        requestsBeforeFirstWrite: median(rs.map((r) => r.requestsBeforeFirstWrite)),
        ...(cw.length ? { consumersWithoutKeyMs: round(median(cw), 1) } : {}),
        samples: rs.map((r) => round(r.oldKeyDeadMs, 1)),
      };
    };
    return {
      latencyMs: o.latencyMs,
      runs: o.runs,
      nodeStartMs: round(nodeStart, 1),
      floorFourRequestsMs: round(floor4, 1),
      floorDeleteAndCheckMs: round(floor2, 1),
      fanoutStores: moto ? 4 : 3,
      file: summary('file', leakRef),
      fanout: summary('fanout', leakRef),
      revokeFirst: summary('revokeFirst', revokeRef),
      ...(o.baseRoot
        ? { base: { root: o.baseRoot, file: summary('fileBase', leakRef), fanout: summary('fanoutBase', leakRef) } }
        : {}),
      notes,
    };
  } finally {
    for (const c of closers.reverse()) await c().catch(() => undefined);
  }
}
