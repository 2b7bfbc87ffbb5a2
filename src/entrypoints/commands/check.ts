import type { RegisterCommand } from './context.ts';

// Registers nothing yet: filled in by issue 7 (operability).
export const registerCheck: RegisterCommand = () => {};
