import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { checkConfig, ConfigError, parseConfig, problemLine } from '../../src/app/config/load.ts';
import { configJsonSchema } from '../../src/app/config/schema.ts';
import { KeyrotorError } from '../../src/core/errors.ts';
import { expiresInSecondsFor } from '../../src/app/compose.ts';

const ok = (extra = '') => `version: 1
keys:
  - name: app
    issuer: { type: local }
    stores: [ { type: file } ]
${extra}`;

function errorOf(text: string, env: NodeJS.ProcessEnv = {}): KeyrotorError {
  try {
    parseConfig(text, 'rotation.config.yaml', env);
  } catch (e) {
    if (e instanceof KeyrotorError) return e;
    throw e;
  }
  throw new Error('expected a config error');
}

describe('config', () => {
  it('the repository config is valid and runs offline', () => {
    const cfg = parseConfig(readFileSync('rotation.config.yaml', 'utf8'), 'rotation.config.yaml', {});
    expect(cfg.keys.map((k) => k.issuer.type)).toEqual(['local']);
    expect(cfg.keys[0]!.stores.map((s) => s.type)).toEqual(['file']);
    expect(cfg.keys[0]!.schedule.every).toBe(7 * 86_400_000);
  });

  it('applies defaults', () => {
    const cfg = parseConfig(ok(), 'c.yaml', {});
    const k = cfg.keys[0]!;
    expect(k.schedule.every).toBe(30 * 86_400_000);
    expect(k.grace).toBe(15 * 60_000);
    expect(k.defaults.revoke.attempts).toBe(5);
    expect(k.health).toEqual([]);
  });

  it.each([
    ['missing version', ok().replace('version: 1\n', ''), /^rotation\.config\.yaml:1:1 version: /],
    ['wrong version', ok().replace('version: 1', 'version: 2'), /rotation\.config\.yaml:1:1 version: /],
    [
      'unknown store type',
      ok().replace('type: file', 'type: s3'),
      /rotation\.config\.yaml:5:17 keys\[0\]\.stores\[0\]\.type: /,
    ],
    [
      'aws store without secretId',
      ok().replace('{ type: file }', '{ type: aws-secrets-manager, region: eu-west-1 }'),
      /keys\[0\]\.stores\[0\]\.secretId: required/,
    ],
    ['bad duration', ok('    schedule: { every: soon }'), /keys\[0\]\.schedule\.every: invalid duration "soon"/],
    ['bad key name', ok().replace('name: app', 'name: "App Key"'), /keys\[0\]\.name: key names are/],
    ['unknown field', ok('    colour: red'), /keys\[0\]: .*colour/],
    ['no stores', ok().replace('stores: [ { type: file } ]', 'stores: []'), /keys\[0\]\.stores: at least one store/],
    ['yaml syntax', 'version: 1\nkeys: [\n', /^rotation\.config\.yaml:\d+:\d+ /],
    [
      'duplicate key names',
      `version: 1
keys:
  - { name: a, issuer: { type: local }, stores: [ { type: file } ] }
  - { name: a, issuer: { type: local }, stores: [ { type: file } ] }
`,
      /keys\[1\]\.name: duplicate key name "a"/,
    ],
  ])('rejects %s with one line naming file:line:col and path', (_n, text, re) => {
    const e = errorOf(text);
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.exitCode).toBe(2);
    expect(e.message).toMatch(re);
    expect(e.message).not.toContain('\n');
  });

  it('state backend: file by default; postgres and dynamodb with their defaults; bad ones are one line', () => {
    expect(parseConfig(ok(), 'c.yaml', {}).raw.state).toEqual({ type: 'file' });
    expect(parseConfig(ok('state: { type: postgres }'), 'c.yaml', {}).raw.state).toEqual({
      type: 'postgres',
      urlEnv: 'KEYROTOR_DATABASE_URL',
      schema: 'keyrotor',
      idleInTransactionTimeout: 30_000,
      lockTimeout: 10_000,
      statementTimeout: 60_000,
    });
    expect(
      parseConfig(ok('state: { type: postgres, idleInTransactionTimeout: 2s, lockTimeout: 0 }'), 'c.yaml', {}).raw
        .state,
    ).toMatchObject({ idleInTransactionTimeout: 2_000, lockTimeout: 0 });
    expect(
      parseConfig(ok('state: { type: dynamodb, table: keyrotor-state, region: eu-west-1 }'), 'c.yaml', {}).raw.state,
    ).toEqual({ type: 'dynamodb', table: 'keyrotor-state', region: 'eu-west-1' });
    for (const [extra, re] of [
      ['state: { type: redis }', /^rotation\.config\.yaml:6:10 state\.type: /],
      ['state: { type: dynamodb }', /state\.table: /],
      ['state: { type: postgres, schema: "Key Rotor" }', /state\.schema: must be a lower-case SQL identifier/],
      ['state: { type: postgres, url: "postgres://u:p@h/db" }', /state: .*url/],
      [
        'state: { type: postgres, urlEnv: "postgres://u:p@h/db" }',
        /state\.urlEnv: must be an environment variable name/,
      ],
      ['state: { type: dynamodb, table: t, endpoint: "not a url" }', /state\.table: |state\.endpoint: /],
      ['state: { type: postgres, lockTimeout: soon }', /state\.lockTimeout: invalid duration "soon"/],
    ] as const) {
      const e = errorOf(ok(extra));
      expect(e.code).toBe('CONFIG_INVALID');
      expect(e.message).toMatch(re);
      expect(e.message).not.toContain('\n');
    }
    const schema = JSON.stringify(configJsonSchema());
    expect(schema).toContain('"dynamodb"');
    expect(schema).toContain('KEYROTOR_DATABASE_URL');
  });

  it('interpolates ${ENV} and ${ENV:-default}; a missing variable is CONFIG_ENV_MISSING with its position', () => {
    const text = ok().replace(
      '{ type: file }',
      '{ type: aws-secrets-manager, secretId: "${SECRET_ID}", region: "${REGION:-eu-west-1}" }',
    );
    const cfg = parseConfig(text, 'c.yaml', { SECRET_ID: 'prod/openai' });
    expect(cfg.keys[0]!.stores[0]).toMatchObject({ secretId: 'prod/openai', region: 'eu-west-1' });
    const e = errorOf(text, {});
    expect(e.code).toBe('CONFIG_ENV_MISSING');
    expect(e.message).toMatch(/^rotation\.config\.yaml:5:\d+ environment variable SECRET_ID is not set$/);
  });

  it('computes the expiry safety net from schedule + grace, or off', () => {
    const text =
      ok().replace('{ type: local }', '{ type: openai, project: proj_1 }') +
      '    schedule: { every: 1d }\n    grace: 1h\n';
    expect(expiresInSecondsFor(parseConfig(text, 'c.yaml', {}).keys[0]!)).toBe(90_000);
    const off = text.replace('project: proj_1', 'project: proj_1, expiresAfter: "off"');
    expect(expiresInSecondsFor(parseConfig(off, 'c.yaml', {}).keys[0]!)).toBeNull();
    expect(expiresInSecondsFor(parseConfig(ok(), 'c.yaml', {}).keys[0]!)).toBeNull();
  });

  it('exports a JSON Schema that names every provider type', () => {
    const text = JSON.stringify(configJsonSchema());
    for (const t of [
      'local',
      'openai',
      'file',
      'aws-secrets-manager',
      'gcp-secret-manager',
      'azure-key-vault',
      'issuer-smoke-test',
    ])
      expect(text).toContain(`"${t}"`);
  });
});

describe('config: every problem at once (keyrotor validate)', () => {
  const bad = `version: 1
keys:
  - name: app
    issuer: { type: openai, project: proj_1 }
    stores: [ { type: file, masterKeyEnv: MY_MASTER } ]
    schedule: { evry: 7d }
    colour: red
  - name: b
    issuer: { type: local }
    stores: [ { type: aws-secrets-manager, region: "\${REGION}" } ]
notifications:
  - { urlEnv: HOOK_URL, on: [rotated], headersFromEnv: { X-Token: HOOK_TOKEN } }
`;

  it('lists every problem, in document order, each with file:line:col and path', () => {
    const { config, problems } = checkConfig(bad, 'c.yaml', {}, { namedEnv: true });
    expect(config).toBeUndefined();
    expect(problems.map(problemLine)).toEqual([
      'c.yaml:5:29 keys[0].stores[0].masterKeyEnv: environment variable MY_MASTER (masterKeyEnv) is not set',
      'c.yaml:6:5 keys[0].schedule.every: required (is the unknown key "evry" a typo of it?)',
      'c.yaml:6:17 keys[0].schedule: unknown key "evry" (did you mean "every"?)',
      'c.yaml:7:5 keys[0]: unknown key "colour"',
      'c.yaml:10:15 keys[1].stores[0].secretId: required',
      'c.yaml:10:52 environment variable REGION is not set',
      'c.yaml:12:7 notifications[0].urlEnv: environment variable HOOK_URL (urlEnv) is not set',
      'c.yaml:12:58 notifications[0].headersFromEnv.X-Token: environment variable HOOK_TOKEN (headersFromEnv X-Token) is not set',
    ]);
  });

  it('the one-line error of other commands names the typo and counts the rest', () => {
    const e = errorOf(bad.replace('"${REGION}"', 'eu-west-1'));
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.message).toBe(
      'rotation.config.yaml:6:5 keys[0].schedule.every: required (is the unknown key "evry" a typo of it?) (+3 more; keyrotor validate lists them all)',
    );
    expect((e as ConfigError).problems).toHaveLength(4);
  });

  it('an unset variable named by a *Env field is a problem for validate only; a defaulted masterKeyEnv is not', () => {
    const text = ok().replace('{ type: local }', '{ type: openai, project: proj_1 }');
    // the defaulted adminKeyEnv counts; the defaulted masterKeyEnv of the file store does not
    expect(checkConfig(text, 'c.yaml', {}, { namedEnv: true }).problems.map(problemLine)).toEqual([
      'c.yaml:4:5 keys[0].issuer.adminKeyEnv: environment variable OPENAI_ADMIN_KEY (adminKeyEnv) is not set',
    ]);
    expect(checkConfig(text, 'c.yaml', { OPENAI_ADMIN_KEY: 'x' }, { namedEnv: true }).problems).toEqual([]);
    expect(checkConfig(text, 'c.yaml', { OPENAI_ADMIN_KEY: '  ' }, { namedEnv: true }).problems).toHaveLength(1);
    // other commands load it (status, audit, ... need no admin key)
    expect(parseConfig(text, 'c.yaml', {}).keys[0]!.name).toBe('app');
    const passEnv = ok('    health: [ { type: command, command: [ "true" ], passEnv: [ GATE_TOKEN ] } ]');
    expect(checkConfig(passEnv, 'c.yaml', {}, { namedEnv: true }).problems.map(problemLine)).toEqual([
      expect.stringMatching(/^c\.yaml:6:\d+ keys\[0\]\.health\[0\]\.passEnv\[0\]: environment variable GATE_TOKEN/),
    ]);
  });
});
