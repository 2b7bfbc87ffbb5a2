export { createFileStateStore, type FileStateStoreOptions } from './file-state-store.ts';
export { STATE_FORMAT } from './schema.ts';
