/**
 * The exhaustive provider registry. Schemas are imported eagerly (they are small and SDK-free);
 * implementations are loaded lazily with import() so a bundle only loads the SDKs its config uses.
 * Adding a provider = a folder + one line in each table below; forgetting a line is a compile error.
 */
import { z } from 'zod';
import type { GateDeps, HealthGate, Issuer, ProviderContext, SecretStore } from '../src/core/ports.ts';

export type { GateDeps };
import { localIssuerSchema } from './issuers/local/local.schema.ts';
import { openaiIssuerSchema } from './issuers/openai/openai.schema.ts';
import { fileStoreSchema } from './stores/file/file.schema.ts';
import { awsSecretsManagerStoreSchema } from './stores/aws-secrets-manager/aws-secrets-manager.schema.ts';
import { gcpSecretManagerStoreSchema } from './stores/gcp-secret-manager/gcp-secret-manager.schema.ts';
import { azureKeyVaultStoreSchema } from './stores/azure-key-vault/azure-key-vault.schema.ts';
import { issuerSmokeTestGateSchema } from './health/issuer-smoke-test/issuer-smoke-test.schema.ts';
import { httpGateSchema } from './health/http/http.schema.ts';
import { usageDrainGateSchema } from './health/usage-drain/usage-drain.schema.ts';
import { manualGateSchema } from './health/manual/manual.schema.ts';
import { commandGateSchema } from './health/command/command.schema.ts';

export const issuerConfigSchema = z.discriminatedUnion('type', [localIssuerSchema, openaiIssuerSchema]);
export const storeConfigSchema = z.discriminatedUnion('type', [
  fileStoreSchema,
  awsSecretsManagerStoreSchema,
  gcpSecretManagerStoreSchema,
  azureKeyVaultStoreSchema,
]);
export const healthConfigSchema = z.discriminatedUnion('type', [
  issuerSmokeTestGateSchema,
  httpGateSchema,
  usageDrainGateSchema,
  manualGateSchema,
  commandGateSchema,
]);

export type IssuerConfig = z.output<typeof issuerConfigSchema>;
export type StoreConfig = z.output<typeof storeConfigSchema>;
export type HealthConfig = z.output<typeof healthConfigSchema>;
export type IssuerType = IssuerConfig['type'];
export type StoreType = StoreConfig['type'];
export type HealthType = HealthConfig['type'];

type Of<U, T> = Extract<U, { type: T }>;

export const issuerFactories: {
  [T in IssuerType]: (cfg: Of<IssuerConfig, T>, ctx: ProviderContext) => Promise<Issuer>;
} = {
  local: async (cfg, ctx) => (await import('./issuers/local/index.ts')).createLocalIssuer(cfg, ctx),
  openai: async (cfg, ctx) => (await import('./issuers/openai/index.ts')).createOpenAIIssuer(cfg, ctx),
};

export const storeFactories: {
  [T in StoreType]: (cfg: Of<StoreConfig, T>, ctx: ProviderContext) => Promise<SecretStore>;
} = {
  file: async (cfg, ctx) => (await import('./stores/file/index.ts')).createFileStore(cfg, ctx),
  'aws-secrets-manager': async (cfg, ctx) =>
    (await import('./stores/aws-secrets-manager/index.ts')).createAwsSecretsManagerStore(cfg, ctx),
  'gcp-secret-manager': async (cfg, ctx) =>
    (await import('./stores/gcp-secret-manager/index.ts')).createGcpSecretManagerStore(cfg, ctx),
  'azure-key-vault': async (cfg, ctx) =>
    (await import('./stores/azure-key-vault/index.ts')).createAzureKeyVaultStore(cfg, ctx),
};

export const healthFactories: {
  [T in HealthType]: (cfg: Of<HealthConfig, T>, ctx: ProviderContext, deps: GateDeps) => Promise<HealthGate>;
} = {
  'issuer-smoke-test': async (cfg, ctx, deps) =>
    (await import('./health/issuer-smoke-test/index.ts')).createIssuerSmokeTestGate(cfg, ctx, deps),
  http: async (cfg, ctx, deps) => (await import('./health/http/index.ts')).createHttpGate(cfg, ctx, deps),
  'usage-drain': async (cfg, ctx, deps) =>
    (await import('./health/usage-drain/index.ts')).createUsageDrainGate(cfg, ctx, deps),
  manual: async (cfg, ctx, deps) => (await import('./health/manual/index.ts')).createManualGate(cfg, ctx, deps),
  command: async (cfg, ctx, deps) => (await import('./health/command/index.ts')).createCommandGate(cfg, ctx, deps),
};

// ---------------------------------------------------------------- provider facts beyond the factories
// What the application and entry points need of a provider besides an instance, re-exported here so
// nothing above the providers layer imports a provider's internals (SDK-free modules only; modules
// that load an SDK are reached through a lazy import()).

export {
  formatNativeToken,
  nativeTokenKey,
  parseNativeToken,
  secretIdMatches,
  TOKEN_RE as NATIVE_TOKEN_RE,
} from './stores/aws-secrets-manager/aws-secrets-manager.native.ts';
export type { AwsSecretsManagerStoreConfig } from './stores/aws-secrets-manager/aws-secrets-manager.schema.ts';
/** Secrets Manager native rotation: what the secret's versions say about one token (loads the AWS SDK). */
export const loadAwsNativeRotation = async () =>
  (await import('./stores/aws-secrets-manager/aws-secrets-manager.client.ts')).inspectNativeRotation;
export type { Decision } from './health/manual/manual.decision.ts';
/** The manual gate's decision files, written by `keyrotor confirm`. */
export const loadManualDecisions = () => import('./health/manual/manual.decision.ts');

export function createIssuer(cfg: IssuerConfig, ctx: ProviderContext): Promise<Issuer> {
  return (issuerFactories[cfg.type] as (c: IssuerConfig, x: ProviderContext) => Promise<Issuer>)(cfg, ctx);
}
export function createStore(cfg: StoreConfig, ctx: ProviderContext): Promise<SecretStore> {
  return (storeFactories[cfg.type] as (c: StoreConfig, x: ProviderContext) => Promise<SecretStore>)(cfg, ctx);
}
export function createGate(cfg: HealthConfig, ctx: ProviderContext, deps: GateDeps): Promise<HealthGate> {
  return (healthFactories[cfg.type] as (c: HealthConfig, x: ProviderContext, d: GateDeps) => Promise<HealthGate>)(
    cfg,
    ctx,
    deps,
  );
}
