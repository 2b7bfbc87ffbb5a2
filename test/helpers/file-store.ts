/**
 * The file secret store of a test workspace, opened the way keyrotor opens it (state under
 * `<dir>/.keyrotor`, the config in `dir`), to put values in by hand or read what consumers read.
 *
 *   const store = await openFileStore(dir, 'app', MASTER);
 *   (await store.readCurrent())?.secret.reveal();
 */
import path from 'node:path';
import { createFileStore } from '../../providers/stores/file/index.ts';
import { fileStoreSchema } from '../../providers/stores/file/file.schema.ts';
import { silentLogger } from '../../src/app/log.ts';
import { systemClock } from '../../src/core/clock.ts';

/** `masterKey`: KEYROTOR_MASTER_KEY (none: the store's own key file) */
export function openFileStore(
  dir: string,
  keyName: string,
  masterKey?: string,
  stateDir = path.join(dir, '.keyrotor'),
) {
  return createFileStore(fileStoreSchema.parse({ type: 'file' }), {
    keyName,
    stateDir,
    configDir: dir,
    logger: silentLogger(),
    clock: systemClock,
    env: masterKey === undefined ? {} : { KEYROTOR_MASTER_KEY: masterKey },
    providerState: { get: () => undefined, set: async () => {} },
  });
}
