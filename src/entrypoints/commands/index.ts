/** Every CLI command, in --help order. A new command is a new file plus one line here. */
import type { RegisterCommand } from './context.ts';
import { registerRotate } from './rotate.ts';
import { registerStatus } from './status.ts';
import { registerValidate } from './validate.ts';
import { registerAdopt } from './adopt.ts';

export const COMMANDS: RegisterCommand[] = [registerRotate, registerStatus, registerAdopt, registerValidate];
