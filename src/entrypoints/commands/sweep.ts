import type { RegisterCommand } from './context.ts';

// Registers nothing yet: filled in by issue 5 (crash safety).
export const registerSweep: RegisterCommand = () => {};
