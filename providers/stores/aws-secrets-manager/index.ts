/** AWS Secrets Manager store (staging labels AWSPENDING -> AWSCURRENT -> AWSPREVIOUS). */
export { createAwsSecretsManagerStore } from './aws-secrets-manager.store.ts';
export type { AwsSecretsManagerStoreDeps } from './aws-secrets-manager.store.ts';
