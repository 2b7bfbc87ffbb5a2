/** The embedded default store: one AES-256-GCM encrypted file per key (see file.store.ts). */
export { createFileStore } from './file.store.ts';
export type { FileStoreDeps } from './file.store.ts';
