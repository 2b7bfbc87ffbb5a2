/**
 * GCP Secret Manager store. Consumers read `projects/<p>/secrets/<s>/versions/latest` (or the `current`
 * alias: both always serve a working key); staged values live in a side secret
 * (`<s>-keyrotor-pending`). See gcp-secret-manager.store.ts for the layout. The secret must exist (the
 * store never creates it); the client uses Application Default Credentials.
 */
export { createGcpSecretManagerStore } from './gcp-secret-manager.store.ts';
export type { GcpSecretManagerStoreDeps } from './gcp-secret-manager.store.ts';
