// The in-memory fake used by workflow tests must honour the same contract as the real stores.
import { describeStoreContract } from './store-contract.ts';
import { MemoryStore } from '../fakes/memory.ts';

describeStoreContract('memory (workflow test fake)', async () => ({ store: new MemoryStore() }), {
  lock: 'lease',
  defaultRead: false,
  reopen: false,
});
