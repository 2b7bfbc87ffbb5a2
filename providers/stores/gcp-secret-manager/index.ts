/**
 * GCP Secret Manager store. Consumers read the `current` alias
 * (`projects/<p>/secrets/<s>/versions/current`); see gcp-secret-manager.store.ts for the layout.
 * The secret must exist (the store never creates it); the client uses Application Default Credentials.
 */
export { createGcpSecretManagerStore } from './gcp-secret-manager.store.ts';
export type { GcpSecretManagerStoreDeps } from './gcp-secret-manager.store.ts';
