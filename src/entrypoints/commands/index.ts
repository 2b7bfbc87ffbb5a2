/** Every CLI command, in --help order. A new command is a new file plus one line here. */
import type { RegisterCommand } from './context.ts';
import { registerRotate } from './rotate.ts';
import { registerResume } from './resume.ts';
import { registerConfirm } from './confirm.ts';
import { registerStatus } from './status.ts';
import { registerAudit } from './audit.ts';
import { registerInventory } from './inventory.ts';
import { registerCheck } from './check.ts';
import { registerSweep } from './sweep.ts';
import { registerAdopt } from './adopt.ts';
import { registerServe } from './serve.ts';
import { registerDaemon } from './daemon.ts';
import { registerValidate } from './validate.ts';

export const COMMANDS: RegisterCommand[] = [
  registerRotate,
  registerResume,
  registerConfirm,
  registerStatus,
  registerAudit,
  registerInventory,
  registerCheck,
  registerSweep,
  registerAdopt,
  registerServe,
  registerDaemon,
  registerValidate,
];
