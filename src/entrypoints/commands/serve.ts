import type { RegisterCommand } from './context.ts';

// Registers nothing yet: filled in by issue 6 (Cloud Run).
export const registerServe: RegisterCommand = () => {};
