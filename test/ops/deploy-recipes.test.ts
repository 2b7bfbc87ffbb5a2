/**
 * The deploy recipes keep state without a shared filesystem (issue 12):
 * - deploy/aws-lambda/template.yaml passes cfn-lint (required when CI=true, skipped loudly elsewhere),
 *   holds state in a DynamoDB table with the fixed key schema, grants exactly the state actions on that
 *   table only, and has no VPC, EFS, subnet or security-group pieces left;
 * - deploy/cloud-run/main.tf declares required_version, reaches Cloud SQL through the built-in
 *   connection and has no Filestore/NFS/VPC egress left (static checks; `terraform fmt -check` when
 *   terraform is installed: init/validate would need the provider registry, which is not reachable).
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, type Tags } from 'yaml';
import { missingOptional, OPTIONAL_BUNDLED } from '../../deploy/build.ts';
import { capture, tempDir } from '../helpers/artifacts.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TEMPLATE = path.join(ROOT, 'deploy/aws-lambda/template.yaml');
const MAIN_TF = path.join(ROOT, 'deploy/cloud-run/main.tf');

// ------------------------------------------------------------------ cfn-lint

type Runner = { cmd: string; args: string[] } | undefined;

function findCfnLint(): Runner {
  const bin = spawnSync('cfn-lint', ['--version'], { encoding: 'utf8' });
  if (bin.status === 0) return { cmd: 'cfn-lint', args: [] };
  const mod = spawnSync('python3', ['-c', 'import cfnlint'], { encoding: 'utf8' });
  if (mod.status === 0) {
    return { cmd: 'python3', args: ['-c', 'import sys; from cfnlint.runner import main; sys.exit(main())'] };
  }
  return undefined;
}

function cfnLintOrSkip(): Runner {
  const r = findCfnLint();
  if (r) return r;
  const msg = 'cfn-lint unavailable. Install it with `pip install cfn-lint`.';
  if (process.env.CI === 'true') throw new Error(`deploy recipes: ${msg} (CI=true, so this is a failure, not a skip)`);
  console.warn(`\n!!!!!!!!!! SKIPPING cfn-lint of the SAM template: ${msg} !!!!!!!!!!\n`);
  return undefined;
}

const CFN_LINT = cfnLintOrSkip();

function cfnLint(file: string, name: string): { status: number | null; out: string } {
  const r = spawnSync(CFN_LINT!.cmd, [...CFN_LINT!.args, file], { encoding: 'utf8', timeout: 120_000 });
  const out = `${r.stdout}${r.stderr}`;
  capture(`cfn-lint-${name}.out`, out);
  return { status: r.status, out };
}

describe.skipIf(!CFN_LINT)('cfn-lint (SAM template)', () => {
  it('passes with no finding', () => {
    const r = cfnLint(TEMPLATE, 'template');
    expect(r.out.trim()).toBe('');
    expect(r.status).toBe(0);
  }, 120_000);

  it('still catches the old name clash (the linter really runs)', () => {
    // the parameter had the resource's name: E3007 (and E3004 through the self reference)
    const broken = readFileSync(TEMPLATE, 'utf8').replaceAll(
      'NativeRotationScheduleExpression',
      'NativeRotationSchedule',
    );
    const file = path.join(tempDir('cfn-lint'), 'template.yaml');
    writeFileSync(file, broken);
    const r = cfnLint(file, 'broken');
    expect(r.status).not.toBe(0);
    expect(r.out).toContain('E3007');
  }, 120_000);
});

// ------------------------------------------------------------------ the SAM template, statically

// CloudFormation short-form intrinsics as plain objects: !Ref X -> { Ref: X }, !GetAtt A.B -> { 'Fn::GetAtt': 'A.B' }
const CFN_TAGS: Tags = [
  'Ref',
  'Sub',
  'GetAtt',
  'If',
  'Not',
  'Equals',
  'Select',
  'Join',
  'Split',
  'FindInMap',
  'And',
  'Or',
].flatMap((fn) => {
  const key = fn === 'Ref' ? 'Ref' : `Fn::${fn}`;
  return [
    { tag: `!${fn}`, resolve: (v: string) => ({ [key]: v }) },
    {
      tag: `!${fn}`,
      collection: 'seq' as const,
      resolve: (v: unknown) => ({ [key]: (v as { toJSON(): unknown }).toJSON() }),
    },
  ];
});

interface Resource {
  Type: string;
  Properties?: Record<string, unknown>;
  [k: string]: unknown;
}
interface Template {
  Parameters: Record<string, unknown>;
  Resources: Record<string, Resource>;
  Outputs: Record<string, unknown>;
}

const template = parse(readFileSync(TEMPLATE, 'utf8'), { customTags: CFN_TAGS }) as Template;

interface Statement {
  Sid?: string;
  Action: string[];
  Resource: unknown;
}

function statements(): Statement[] {
  const fn = template.Resources.KeyrotorFunction!;
  const docs = (fn.Properties!.Policies as unknown[]).filter(
    (p): p is { Statement: unknown[] } => typeof p === 'object',
  );
  const out: Statement[] = [];
  for (const d of docs) {
    for (const s of d.Statement) {
      // an !If [cond, statement, NoValue] contributes its statement
      const st = (s as { 'Fn::If'?: unknown[] })['Fn::If']?.[1] ?? s;
      out.push(st as Statement);
    }
  }
  return out;
}

describe('SAM template (static)', () => {
  it('has no VPC, EFS, subnet or security group left', () => {
    const types = Object.values(template.Resources).map((r) => r.Type);
    expect(types.filter((t) => /^AWS::(EFS|EC2)::/.test(t))).toEqual([]);
    const fn = template.Resources.KeyrotorFunction!;
    expect(fn.Properties).not.toHaveProperty('VpcConfig');
    expect(fn.Properties).not.toHaveProperty('FileSystemConfigs');
    expect(Object.keys(template.Parameters)).not.toContain('SubnetIds');
    expect(Object.keys(template.Parameters)).not.toContain('SecurityGroupId');
    const text = JSON.stringify(template);
    expect(text).not.toMatch(/elasticfilesystem:|AWSLambdaVPCAccessExecutionRole|\/mnt\//);
  });

  it('no parameter shares a name with a resource', () => {
    const clash = Object.keys(template.Parameters).filter((p) => p in template.Resources);
    expect(clash).toEqual([]);
  });

  it('defines the state table exactly as the DynamoDB backend expects', () => {
    const tables = Object.entries(template.Resources).filter(([, r]) => r.Type === 'AWS::DynamoDB::Table');
    expect(tables.map(([n]) => n)).toEqual(['StateTable']);
    const p = tables[0]![1].Properties!;
    expect(p.BillingMode).toBe('PAY_PER_REQUEST');
    expect(p.KeySchema).toEqual([
      { AttributeName: 'pk', KeyType: 'HASH' },
      { AttributeName: 'sk', KeyType: 'RANGE' },
    ]);
    expect(p.AttributeDefinitions).toEqual([
      { AttributeName: 'pk', AttributeType: 'S' },
      { AttributeName: 'sk', AttributeType: 'S' },
    ]);
    expect(p.TimeToLiveSpecification).toEqual({ AttributeName: 'ttl', Enabled: true });
    expect(tables[0]![1].DeletionPolicy).toBe('Retain');
  });

  it('points the function at the table', () => {
    const vars = (
      template.Resources.KeyrotorFunction!.Properties!.Environment as { Variables: Record<string, unknown> }
    ).Variables;
    expect(vars.KEYROTOR_STATE_TABLE).toEqual({ Ref: 'StateTable' });
    expect(vars.KEYROTOR_CONFIG).toBe('/var/task/rotation.config.yaml');
  });

  it('grants exactly the state actions, on the state table only', () => {
    const all = statements();
    const dynamo = all.filter((s) => s.Action.some((a) => a.startsWith('dynamodb:')));
    expect(dynamo).toHaveLength(1);
    expect([...dynamo[0]!.Action].sort()).toEqual(
      [
        'dynamodb:ConditionCheckItem',
        'dynamodb:DescribeTable',
        'dynamodb:GetItem',
        'dynamodb:PutItem',
        'dynamodb:Query',
        'dynamodb:Scan',
        'dynamodb:UpdateItem',
      ].sort(),
    );
    expect(dynamo[0]!.Resource).toEqual({ 'Fn::GetAtt': 'StateTable.Arn' });
    // nothing else may touch DynamoDB or use wildcards
    for (const s of all) {
      for (const a of s.Action) expect(a).not.toMatch(/\*/);
      expect(s.Resource).not.toBe('*');
    }
    // Secrets Manager and KMS permissions are unchanged
    const sm = all.find((s) => s.Sid === 'RotateTheConfiguredSecrets');
    expect(sm?.Resource).toEqual({ Ref: 'RotatedSecretArns' });
    expect(all.find((s) => s.Sid === 'UseTheSecretsKmsKey')?.Resource).toEqual({ Ref: 'SecretsKmsKeyArn' });
  });

  it('keeps the optional Secrets Manager native rotation', () => {
    const sched = template.Resources.NativeRotationSchedule!;
    expect(sched.Type).toBe('AWS::SecretsManager::RotationSchedule');
    expect(sched.Condition).toBe('NativeRotation');
    expect(sched.Properties!.RotationLambdaARN).toEqual({ 'Fn::GetAtt': 'KeyrotorFunction.Arn' });
    expect(sched.Properties!.RotationRules).toEqual({
      ScheduleExpression: { Ref: 'NativeRotationScheduleExpression' },
    });
    expect(template.Resources.SecretsManagerInvoke?.Properties?.Principal).toBe('secretsmanager.amazonaws.com');
  });
});

// ------------------------------------------------------------------ the Cloud Run Terraform, statically

/** main.tf without its `#` comments (they may name what is gone; no string in it holds a `#`) */
const tf = readFileSync(MAIN_TF, 'utf8')
  .split('\n')
  .map((l) => l.replace(/(^|\s)#.*$/, ''))
  .join('\n');

describe('Cloud Run Terraform (static)', () => {
  it('declares required_version >= 1.5 and its providers', () => {
    const block = /terraform\s*\{([\s\S]*?)\n\}/.exec(tf)?.[1] ?? '';
    expect(block).toMatch(/required_version\s*=\s*">=\s*1\.5"/);
    expect(block).toMatch(/required_providers\s*\{/);
    for (const p of ['hashicorp/google', 'hashicorp/random']) expect(block).toContain(`"${p}"`);
  });

  it('has no Filestore, NFS, VPC connector or VPC egress left', () => {
    expect(tf).not.toMatch(/google_filestore_instance|google_vpc_access_connector|google_compute_(network|subnetwork)/);
    expect(tf).not.toMatch(/\bnfs\s*\{|\bvpc_access\s*\{|network_interfaces/);
    expect(tf).not.toMatch(/variable\s+"(nfs_server|nfs_path|network|subnetwork)"/);
  });

  it('reaches Cloud SQL through the built-in connection with a URL from Secret Manager', () => {
    expect(tf).toMatch(/resource\s+"google_sql_database_instance"\s+"state"/);
    expect(tf).toMatch(/database_version\s*=\s*"POSTGRES_\d+"/);
    // the cloud_sql_instance volume on the service and on the state-init job
    expect(tf.match(/cloud_sql_instance\s*\{/g)).toHaveLength(2);
    expect(tf.match(/mount_path\s*=\s*"\/cloudsql"/g)).toHaveLength(2);
    expect(tf).toContain('?host=/cloudsql/');
    expect(tf).toMatch(/database_env\s*=\s*"KEYROTOR_DATABASE_URL"/);
    expect(tf).toMatch(/role\s*=\s*"roles\/cloudsql\.client"/);
    expect(tf).toMatch(/args\s*=\s*\["state",\s*"init"\]/);
    // no broad roles for the runtime identity
    expect(tf).not.toMatch(/roles\/(owner|editor|cloudsql\.admin|secretmanager\.admin)"/);
  });

  const terraform = spawnSync('terraform', ['version'], { encoding: 'utf8' }).status === 0;
  it.skipIf(!terraform)('is terraform fmt clean (terraform installed)', () => {
    const r = spawnSync('terraform', ['fmt', '-check', '-diff', path.dirname(MAIN_TF)], { encoding: 'utf8' });
    capture('terraform-fmt.out', `${r.stdout}${r.stderr}`);
    expect(r.stdout).toBe('');
    expect(r.status).toBe(0);
  });
});

// ------------------------------------------------------------------ the Lambda bundle and the state backends

describe('build: state backend clients', () => {
  it('bundles the DynamoDB client when installed, and reports (not fails on) an absent one', () => {
    expect(OPTIONAL_BUNDLED).toContain('@aws-sdk/client-dynamodb');
    const root = tempDir('optional-root');
    expect(missingOptional(root)).toEqual(OPTIONAL_BUNDLED);
    const installed = path.join(root, 'node_modules', '@aws-sdk', 'client-dynamodb');
    mkdirSync(installed, { recursive: true });
    writeFileSync(path.join(installed, 'package.json'), '{"name":"@aws-sdk/client-dynamodb"}');
    expect(missingOptional(root)).toEqual(OPTIONAL_BUNDLED.filter((p) => p !== '@aws-sdk/client-dynamodb'));
  });
});
