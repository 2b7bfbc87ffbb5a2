import type { RegisterCommand } from './context.ts';

// Registers nothing yet: filled in by issue 4 (consumer health gates).
export const registerConfirm: RegisterCommand = () => {};
