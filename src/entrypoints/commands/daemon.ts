import type { RegisterCommand } from './context.ts';

// Registers nothing yet: filled in by issue 6 (scheduler daemon).
export const registerDaemon: RegisterCommand = () => {};
