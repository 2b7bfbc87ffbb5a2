/**
 * A local copy of a secret's staging labels that the AWS Secrets Manager store updates the way Secrets
 * Manager does after each of its own successful calls. On the straight path of a rotation (check ->
 * stage -> promote in one process) the store plans its next label move on this copy instead of reading
 * the labels again (DescribeSecret) before every move. Any error drops it, and the store reads again.
 * Pure: no SDK, no I/O.
 */
import { CURRENT, PREVIOUS, toLabelState, type LabelAnswer, type LabelState } from './aws-secrets-manager.labels.ts';

/** The label map of a DescribeSecret answer, as this store last read it and then changed it itself. */
export interface LabelModel {
  stages: Record<string, string[]>;
  deletedDate: Date | undefined;
  rotationEnabled: boolean;
}

export function modelOf(out: LabelAnswer): LabelModel {
  const stages: Record<string, string[]> = {};
  for (const [id, raw] of Object.entries(out.VersionIdsToStages ?? {})) stages[id] = [...new Set(raw ?? [])];
  return { stages, deletedDate: out.DeletedDate, rotationEnabled: out.RotationEnabled === true };
}

export function stateOfModel(m: LabelModel): LabelState {
  return toLabelState({ VersionIdsToStages: m.stages, DeletedDate: m.deletedDate, RotationEnabled: m.rotationEnabled });
}

export const cloneModel = (m: LabelModel): LabelModel => ({
  ...m,
  stages: Object.fromEntries(Object.entries(m.stages).map(([k, v]) => [k, [...v]])),
});

/** Apply a successful UpdateSecretVersionStage the way Secrets Manager does (a label is on one version at most). */
export function applyRelabel(
  m: LabelModel,
  input: { VersionStage: string; MoveToVersionId?: string; RemoveFromVersionId?: string },
): void {
  const take = (label: string) => {
    for (const id of Object.keys(m.stages)) m.stages[id] = m.stages[id]!.filter((l) => l !== label);
  };
  const give = (label: string, id: string) => {
    take(label);
    m.stages[id] = [...(m.stages[id] ?? []), label];
  };
  const from = input.RemoveFromVersionId;
  if (from && m.stages[from]) m.stages[from] = m.stages[from].filter((l) => l !== input.VersionStage);
  if (input.MoveToVersionId) give(input.VersionStage, input.MoveToVersionId);
  // moving AWSCURRENT puts AWSPREVIOUS on the version it left (documented Secrets Manager behaviour)
  if (input.VersionStage === CURRENT && input.MoveToVersionId && from && from !== input.MoveToVersionId)
    give(PREVIOUS, from);
}

/** Apply a successful PutSecretValue whose answer carried exactly `labels` on `versionId`. */
export function applyPut(m: LabelModel, versionId: string, labels: string[]): void {
  for (const id of Object.keys(m.stages)) m.stages[id] = m.stages[id]!.filter((l) => !labels.includes(l));
  m.stages[versionId] = [...new Set([...(m.stages[versionId] ?? []), ...labels])];
}
