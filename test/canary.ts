/**
 * The canary: a recognisable secret value that flows through the whole suite (as store values,
 * issued keys, admin keys). No captured output, snapshot, state file or log may ever contain it.
 * Fakes build every secret they mint from it so any leak is caught by a plain substring check.
 */
export const CANARY = 'sk-canary-7f3a9c1e5b2d4f60a8c7e9d1b3f5a7c9';
