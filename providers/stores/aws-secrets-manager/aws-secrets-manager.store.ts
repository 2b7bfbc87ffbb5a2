/**
 * SecretStore on AWS Secrets Manager, driven by staging labels.
 *
 * Slots: AWSCURRENT = current (what consumers read), AWSPREVIOUS = previous, AWSPENDING = pending.
 * Per-version metadata lives in custom staging labels (`kr:`, `kr-empty`, `kr-prev:`; tags are per secret
 * only): their codec and view are in aws-secrets-manager.labels.ts.
 *
 * One packed label per version, not one label per field: a staging label is unique within a secret
 * (attaching it to one version removes it from any other), so only a label that carries the rotation
 * id is safe, and Secrets Manager caps the labels on a secret. Old labels are swept after promote.
 *
 * Bootstrap placeholder. PutSecretValue on a secret with no versions attaches AWSCURRENT to the new
 * version whatever VersionStages says (documented AWS behaviour, reproduced by moto), and removing
 * AWSCURRENT from the only version does not reliably make "nothing current" (moto keeps serving the
 * value to a plain GetSecretValue). So before the first stage into an empty secret, this store writes
 * a placeholder version (labels AWSCURRENT + kr-empty; value: a short non-key text, or `{}` in JSON
 * mode) and stages the real value beside it as AWSPENDING. Consumers never see an unverified key;
 * reads treat the placeholder as "no value". Demoting a bootstrap moves AWSCURRENT back to it.
 *
 * Demote and AWSPREVIOUS. Moving AWSCURRENT back makes Secrets Manager put AWSPREVIOUS on the
 * demoted (rejected) version, which would invite a manual "roll back to AWSPREVIOUS" onto a dead
 * key. demote therefore moves AWSPREVIOUS back to the version that held it before this rotation
 * promoted (marked `kr-prev:<rotationId>` at promote), or removes it when there was none. Net effect:
 * demote restores current and previous exactly as they were before promote.
 *
 * Idempotency: every call reads the labels first (DescribeSecret) and converges; PutSecretValue uses a
 * ClientRequestToken derived from the rotation id (UUID-shaped SHA-256), so a lost response retried
 * cannot create a second version. A version pending for another rotation blocks stage (LOCKED).
 *
 * Native rotation (Secrets Manager calls keyrotor's Lambda with createSecret/setSecret/testSecret/
 * finishSecret): AWS picks the new version's id. The handler puts that token in the key's provider
 * state (aws-secrets-manager.native.ts); `stage` then writes into that version instead of a derived
 * one, binding the token to its rotation id first, so the token is never reused for another value.
 *
 * Files: aws-secrets-manager.labels.ts (label codec and view, pure), aws-secrets-manager.simulate.ts
 * (local copy of the labels for the straight path, pure), aws-secrets-manager.client.ts (client setup,
 * native-rotation inspection), this file (the store).
 */
import {
  DescribeSecretCommand,
  GetSecretValueCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
  UpdateSecretVersionStageCommand,
  type DescribeSecretCommandOutput,
} from '@aws-sdk/client-secrets-manager';
import { KeyrotorError } from '../../../src/core/errors.ts';
import { Secret } from '../../../src/core/secret.ts';
import type { Stage } from '../../../src/core/stages.ts';
import type {
  Logger,
  ProviderContext,
  SecretStore,
  SlotInfo,
  StageRequest,
  StoreSlots,
  StoredVersion,
  VersionMeta,
} from '../../../src/core/ports.ts';
import { StepMemo } from '../../common/step-memo.ts';
import type { AwsSecretsManagerStoreConfig } from './aws-secrets-manager.schema.ts';
import { malformedAnswer, mapAwsError, type AwsSmOperation } from './aws-secrets-manager.errors.ts';
import { formatNativeToken, nativeTokenKey, parseNativeToken } from './aws-secrets-manager.native.ts';
import { buildClient, regionOf } from './aws-secrets-manager.client.ts';
import {
  CURRENT,
  META_PREFIX,
  PENDING,
  PLACEHOLDER_LABEL,
  PLACEHOLDER_TEXT,
  PREVIOUS,
  PREV_OF_PREFIX,
  isOurLabel,
  metaLabel,
  parseMetaLabel,
  prevOfLabel,
  publicMeta,
  requestToken,
  toLabelState,
  type LabelState,
  type VersionView,
} from './aws-secrets-manager.labels.ts';
import {
  applyPut,
  applyRelabel,
  cloneModel,
  modelOf,
  stateOfModel,
  type LabelModel,
} from './aws-secrets-manager.simulate.ts';

export { inspectNativeRotation, type NativeRotationView } from './aws-secrets-manager.client.ts';

/** What tests and embedders may inject (the seam every store offers as its factory's third argument). */
export interface AwsSecretsManagerStoreDeps {
  /** an already configured client (the caller destroys it); default: built from cfg + ctx.env */
  client?: SecretsManagerClient | undefined;
}

/** What one step remembers for the next (see `memo`). */
interface Known {
  model: LabelModel;
  /** after check: the current version as read, with its raw content (JSON mode stages on top of it) */
  current?: { id: string; version: StoredVersion | null; raw: Secret } | undefined;
  /** after stage: the version it wrote as AWSPENDING */
  pending?: { rotationId: string; versionId: string; secret: Secret; meta: VersionMeta } | undefined;
}

/** The store's factory. */
export async function createAwsSecretsManagerStore(
  cfg: AwsSecretsManagerStoreConfig,
  ctx: ProviderContext,
  deps: AwsSecretsManagerStoreDeps = {},
): Promise<SecretStore> {
  const client = deps.client ?? buildClient(cfg, ctx.env);
  const region = await regionOf(client, cfg);
  return new AwsSecretsManagerStore(cfg, client, region, ctx.logger, !deps.client, ctx.providerState);
}

class AwsSecretsManagerStore implements SecretStore {
  readonly type = 'aws-secrets-manager';
  readonly label: string;
  private readonly secretId: string;
  private readonly jsonKey: string | undefined;
  private readonly client: SecretsManagerClient;
  private readonly region: string;
  private readonly log: Logger;
  private readonly ownsClient: boolean;
  private readonly providerState: ProviderContext['providerState'];
  /**
   * What the last step read and then changed itself, for the next step of the same rotation in this
   * process (see providers/common/step-memo.ts): the labels, after check the current value, after stage
   * the version it wrote. Values only inside a Secret; never persisted.
   */
  private readonly memo = new StepMemo<Known>();
  /** while a fresh-path stage/promote runs: the labels as changed by its own successful calls */
  private model: LabelModel | undefined;

  constructor(
    cfg: AwsSecretsManagerStoreConfig,
    client: SecretsManagerClient,
    region: string,
    logger: Logger,
    ownsClient: boolean,
    providerState: ProviderContext['providerState'],
  ) {
    this.ownsClient = ownsClient;
    this.providerState = providerState;
    this.secretId = cfg.secretId;
    this.jsonKey = cfg.jsonKey;
    this.client = client;
    this.region = region;
    this.label = `aws-secrets-manager:${cfg.secretId}`;
    this.log = logger.child({ store: this.label });
  }

  // ---------------------------------------------------------------- SDK calls (all errors mapped here)

  private async call<T>(
    op: AwsSmOperation,
    stage: Stage | undefined,
    fn: () => Promise<T>,
    extra: { versionId?: string; scrub?: string[] } = {},
  ): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw mapAwsError(e, {
        op,
        secretId: this.secretId,
        region: this.region,
        stage,
        versionId: extra.versionId,
        scrub: extra.scrub,
      });
    }
  }

  /** a 200 without what the call answers with (see errors.ts `malformedAnswer`) */
  private malformed(op: AwsSmOperation, what: string, stage: Stage | undefined, versionId?: string): KeyrotorError {
    return malformedAnswer({ op, secretId: this.secretId, region: this.region, stage, versionId }, what);
  }

  /**
   * DescribeSecret, checked: an answer without the secret's ARN, or with a label map that is not a map,
   * must never read as "a secret with no versions" (that would bootstrap over the real current value).
   */
  private async describeSecret(stage: Stage | undefined): Promise<DescribeSecretCommandOutput> {
    const out = await this.call('DescribeSecret', stage, () =>
      this.client.send(new DescribeSecretCommand({ SecretId: this.secretId })),
    );
    const stages: unknown = out.VersionIdsToStages;
    if (typeof out.ARN !== 'string' || !out.ARN) throw this.malformed('DescribeSecret', 'no ARN', stage);
    if (
      stages !== undefined &&
      (stages === null || typeof stages !== 'object' || Object.values(stages).some((l) => !Array.isArray(l)))
    ) {
      throw this.malformed('DescribeSecret', 'VersionIdsToStages is not a map of label lists', stage);
    }
    return out;
  }

  private async state(stage: Stage | undefined, answer?: DescribeSecretCommandOutput): Promise<LabelState> {
    const out = answer ?? (await this.describeSecret(stage));
    const st = toLabelState(out);
    if (st.deletedDate) {
      throw new KeyrotorError(
        'STORE_NOT_FOUND',
        `secret ${this.secretId} in region ${this.region} is scheduled for deletion`,
        {
          stage,
          retryable: false,
          hint: `aws secretsmanager restore-secret --secret-id ${this.secretId} --region ${this.region}`,
        },
      );
    }
    return st;
  }

  /** The labels: from this call's own model on the fresh path, else read (DescribeSecret). */
  private async view(stage: Stage | undefined): Promise<LabelState> {
    return this.model ? stateOfModel(this.model) : this.state(stage);
  }

  private async getString(versionId: string, stage: Stage | undefined): Promise<string> {
    const out = await this.call(
      'GetSecretValue',
      stage,
      () => this.client.send(new GetSecretValueCommand({ SecretId: this.secretId, VersionId: versionId })),
      { versionId },
    );
    if (out.VersionId !== versionId)
      throw this.malformed(
        'GetSecretValue',
        `asked for version ${versionId}, the answer names ${out.VersionId ? 'another' : 'none'}`,
        stage,
        versionId,
      );
    if (out.SecretString === undefined && out.SecretBinary === undefined)
      throw this.malformed('GetSecretValue', 'neither SecretString nor SecretBinary', stage, versionId);
    if (typeof out.SecretString !== 'string') {
      throw this.corrupt(versionId, 'holds binary data or no string; keyrotor stores the key as SecretString', stage);
    }
    return out.SecretString;
  }

  /**
   * One UpdateSecretVersionStage call. If Secrets Manager rejects it as InvalidParameterException
   * (typically: the SDK retried a call whose first attempt was applied, so RemoveFromVersionId no
   * longer holds the label), re-read the labels: when `done` holds, the goal was reached.
   */
  private async relabel(
    input: { VersionStage: string; MoveToVersionId?: string; RemoveFromVersionId?: string },
    done: (st: LabelState) => boolean,
    stage: Stage,
  ): Promise<void> {
    const versionId = input.MoveToVersionId ?? input.RemoveFromVersionId;
    try {
      const out = await this.client.send(new UpdateSecretVersionStageCommand({ SecretId: this.secretId, ...input }));
      // an answer without the secret's ARN proves nothing: the caught error forgets the model, the retry re-reads
      if (typeof out.ARN !== 'string' || !out.ARN)
        throw this.malformed('UpdateSecretVersionStage', 'no ARN', stage, versionId);
      if (this.model) applyRelabel(this.model, input);
    } catch (e) {
      this.model = undefined; // whatever happened, the next step reads the labels
      const name = (e as { name?: unknown } | null)?.name;
      if (name === 'InvalidParameterException' && done(await this.state(stage))) {
        this.log.debug(
          { stage, op: 'UpdateSecretVersionStage', label: input.VersionStage, versionId },
          'labels already as wanted',
        );
        return;
      }
      throw mapAwsError(e, {
        op: 'UpdateSecretVersionStage',
        secretId: this.secretId,
        region: this.region,
        stage,
        versionId,
      });
    }
  }

  /** Add `label` to `versionId`, moving it from wherever it is now. No-op if already there. */
  private async attach(st: LabelState, label: string, versionId: string, stage: Stage): Promise<void> {
    const holder = st.withLabel(label);
    if (holder?.id === versionId) return;
    this.log.debug(
      { stage, op: 'UpdateSecretVersionStage', label, moveTo: versionId, removeFrom: holder?.id },
      'attach staging label',
    );
    await this.relabel(
      { VersionStage: label, MoveToVersionId: versionId, ...(holder ? { RemoveFromVersionId: holder.id } : {}) },
      (now) => now.withLabel(label)?.id === versionId,
      stage,
    );
  }

  /** Remove `label` from `version` if it is there. */
  private async detach(version: VersionView, label: string, stage: Stage): Promise<void> {
    if (!version.has(label)) return;
    this.log.debug({ stage, op: 'UpdateSecretVersionStage', label, removeFrom: version.id }, 'remove staging label');
    await this.relabel(
      { VersionStage: label, RemoveFromVersionId: version.id },
      (now) => !now.versions.some((v) => v.id === version.id && v.has(label)),
      stage,
    );
  }

  /** Move AWSCURRENT to `to` (Secrets Manager moves AWSPREVIOUS to the old current by itself). */
  private async moveCurrent(st: LabelState, to: string, stage: Stage): Promise<void> {
    const from = st.current;
    if (from?.id === to) return;
    this.log.info(
      { stage, op: 'UpdateSecretVersionStage', label: CURRENT, moveTo: to, removeFrom: from?.id },
      'move AWSCURRENT',
    );
    await this.relabel(
      { VersionStage: CURRENT, MoveToVersionId: to, ...(from ? { RemoveFromVersionId: from.id } : {}) },
      (now) => now.current?.id === to,
      stage,
    );
  }

  private async put(
    value: string,
    token: string,
    labels: string[],
    stage: Stage,
    alsoScrub: string[] = [],
  ): Promise<{ versionId: string; labels: string[] }> {
    this.log.info({ stage, op: 'PutSecretValue', versionId: token, labels }, 'write version');
    const out = await this.call(
      'PutSecretValue',
      stage,
      () =>
        this.client.send(
          new PutSecretValueCommand({
            SecretId: this.secretId,
            SecretString: value,
            ClientRequestToken: token,
            VersionStages: labels,
          }),
        ),
      { versionId: token, scrub: [value, ...alsoScrub] },
    );
    // the write may have happened: a retry with the same token is a no-op that answers properly
    if (out.VersionId !== token)
      throw this.malformed(
        'PutSecretValue',
        out.VersionId ? 'another version id than the token' : 'no version id',
        stage,
        token,
      );
    if (!Array.isArray(out.VersionStages)) throw this.malformed('PutSecretValue', 'no staging labels', stage, token);
    return { versionId: out.VersionId, labels: out.VersionStages };
  }

  // ---------------------------------------------------------------- values

  private corrupt(versionId: string, what: string, stage: Stage | undefined): KeyrotorError {
    return new KeyrotorError(
      'STORE_CORRUPT',
      `version ${versionId} of secret ${this.secretId} in region ${this.region} ${what}`,
      {
        stage,
        retryable: false,
        hint: this.jsonKey
          ? `the secret must hold a JSON object; keyrotor keeps the key in its "${this.jsonKey}" field`
          : 'fix or remove that version in Secrets Manager',
      },
    );
  }

  private parseObject(raw: string, versionId: string, stage: Stage | undefined): Record<string, unknown> {
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      // never surface the parser's message: it quotes the input
      throw this.corrupt(versionId, `is not JSON, but jsonKey "${this.jsonKey}" is configured`, stage);
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw this.corrupt(versionId, `is not a JSON object, but jsonKey "${this.jsonKey}" is configured`, stage);
    }
    return parsed as Record<string, unknown>;
  }

  /**
   * The key held by a version, or null when it holds none. A version keyrotor wrote (`marked`) must hold
   * one; an unmarked version (written by a person, or the JSON object before the first rotation) may
   * lack the field, which means "no value yet".
   */
  private extract(raw: string, versionId: string, marked: boolean, stage: Stage | undefined): Secret | null {
    if (!this.jsonKey) return raw.length > 0 ? Secret.of(raw) : null;
    const obj = this.parseObject(raw, versionId, stage);
    const field = obj[this.jsonKey];
    if (field === undefined || field === null || field === '') {
      if (marked) throw this.corrupt(versionId, `was written by keyrotor but has no "${this.jsonKey}" field`, stage);
      return null;
    }
    if (typeof field !== 'string') throw this.corrupt(versionId, `has a non-string "${this.jsonKey}" field`, stage);
    return Secret.of(field);
  }

  private async readVersion(v: VersionView | undefined, stage: Stage | undefined): Promise<StoredVersion | null> {
    if (!v || v.placeholder) return null;
    const raw = await this.getString(v.id, stage);
    const secret = this.extract(raw, v.id, v.meta !== undefined, stage);
    return secret ? { versionId: v.id, secret, meta: publicMeta(v.meta) } : null;
  }

  /** describe(): like readVersion but without returning the value (JSON mode must look at it). */
  private async slot(v: VersionView | undefined): Promise<SlotInfo | undefined> {
    if (!v || v.placeholder) return undefined;
    if (this.jsonKey && !v.meta) {
      const raw = await this.getString(v.id, undefined);
      if (!this.extract(raw, v.id, false, undefined)) return undefined;
    }
    return { versionId: v.id, meta: publicMeta(v.meta) };
  }

  // ---------------------------------------------------------------- SecretStore

  /** Release the HTTP sockets of a client this store built (an injected client is the caller's). */
  async close(): Promise<void> {
    if (this.ownsClient) this.client.destroy();
  }

  async check(): Promise<void> {
    this.memo.forget();
    // DescribeSecret besides GetSecretValue: the labels of every version (a foreign AWSPENDING locks,
    // AWSPREVIOUS must be known for demote, and a deleted or natively rotated secret shows here)
    const out = await this.describeSecret('preflight');
    const model = modelOf(out);
    const st = await this.state('preflight', out);
    if (st.rotationEnabled && !parseNativeToken(this.providerState.get(nativeTokenKey(this.secretId)))) {
      this.log.warn(
        { stage: 'preflight' },
        'Secrets Manager rotation is enabled on this secret; it will compete with keyrotor for AWSPENDING/AWSCURRENT',
      );
    }
    // proves read access (and KMS decrypt) and that the current value has the expected shape
    let current: { id: string; version: StoredVersion | null; raw: Secret } | undefined;
    if (st.current && !st.current.placeholder) {
      const raw = await this.getString(st.current.id, 'preflight');
      const secret = this.extract(raw, st.current.id, st.current.meta !== undefined, 'preflight');
      current = {
        id: st.current.id,
        version: secret ? { versionId: st.current.id, secret, meta: publicMeta(st.current.meta) } : null,
        raw: Secret.of(raw),
      };
    }
    // a rotation's preflight reads the current value next and stages after that: keep what was read
    this.memo.remember({ model, current }, { readCurrent: true, stage: true });
  }

  async describe(): Promise<StoreSlots> {
    this.memo.forget();
    const st = await this.state(undefined);
    const [current, previous] = await Promise.all([this.slot(st.current), this.slot(st.previous)]);
    const pending = st.pending ? { versionId: st.pending.id, meta: publicMeta(st.pending.meta) } : undefined;
    return { ...(current ? { current } : {}), ...(previous ? { previous } : {}), ...(pending ? { pending } : {}) };
  }

  async readCurrent(): Promise<StoredVersion | null> {
    const k = this.memo.take({ step: 'readCurrent' });
    if (k) {
      // what check() just read (labels and value)
      const st = stateOfModel(k.model);
      if (!st.current || st.current.placeholder) return null;
      if (k.current?.id === st.current.id) return k.current.version;
    }
    this.memo.forget();
    const st = await this.state(undefined);
    return this.readVersion(st.current, undefined);
  }

  async readPrevious(): Promise<StoredVersion | null> {
    this.memo.forget();
    const st = await this.state(undefined);
    return this.readVersion(st.previous, undefined);
  }

  async readPending(rotationId: string): Promise<StoredVersion | null> {
    const k = this.memo.take({ step: 'readPending', rotationId });
    const p = k?.pending;
    if (k && p?.rotationId === rotationId) {
      // the version this instance just wrote as AWSPENDING (PutSecretValue's answer said so)
      const v = stateOfModel(k.model).byRotation(rotationId);
      if (v?.id === p.versionId && v.has(PENDING) && !v.has(CURRENT))
        return { versionId: p.versionId, secret: p.secret, meta: p.meta };
    }
    this.memo.forget();
    const st = await this.state(undefined);
    const v = st.byRotation(rotationId);
    if (!v || !v.has(PENDING) || v.has(CURRENT)) return null;
    return this.readVersion(v, undefined);
  }

  async stage(req: StageRequest): Promise<{ versionId: string }> {
    const k = this.memo.take({ step: 'stage' });
    this.model = k ? cloneModel(k.model) : undefined;
    try {
      const out = await this.stageIn(req, k?.current);
      // verify reads this version next and promote moves it: remember (only on the straight path)
      if (this.model && out.fresh) {
        const pending = {
          rotationId: req.rotationId,
          versionId: out.versionId,
          secret: req.secret,
          meta: publicMeta(parseMetaLabel(metaLabel(req.rotationId, req.meta))),
        };
        this.memo.remember({ model: this.model, pending }, { readPending: req.rotationId, promote: req.rotationId });
      }
      return { versionId: out.versionId };
    } finally {
      this.model = undefined;
    }
  }

  private async stageIn(
    req: StageRequest,
    known: { id: string; version: StoredVersion | null; raw: Secret } | undefined,
  ): Promise<{ versionId: string; fresh: boolean }> {
    const stage: Stage = 'stage';
    const { rotationId } = req;
    const label = metaLabel(rotationId, req.meta);
    let st = await this.view(stage);

    const ours = st.byRotation(rotationId);
    if (ours) {
      if (req.meta.fingerprint && ours.meta?.fingerprint && req.meta.fingerprint !== ours.meta.fingerprint) {
        throw new KeyrotorError(
          'STORE_CONFLICT',
          `rotation ${rotationId} already staged version ${ours.id} in ${this.label} with a different key (fingerprint ${ours.meta.fingerprint}, now ${req.meta.fingerprint})`,
          { stage, retryable: false },
        );
      }
      // promoted already (current or previous): a late retry changes nothing
      if (ours.has(CURRENT) || ours.has(PREVIOUS)) return { versionId: ours.id, fresh: false };
      if (!ours.has(PENDING)) {
        this.assertNotLocked(st, rotationId);
        await this.attach(st, PENDING, ours.id, stage);
      }
      return { versionId: ours.id, fresh: false };
    }

    const native = this.nativeToken(st, rotationId);
    this.assertNotLocked(st, rotationId, native);

    // An empty secret would make our version current at once: give it a placeholder current first.
    if (!st.current) {
      this.model = undefined; // bootstrap: read the labels after every change
      const placeholder = this.jsonKey ? '{}' : PLACEHOLDER_TEXT;
      const p = await this.put(placeholder, requestToken('empty', rotationId), [CURRENT, PLACEHOLDER_LABEL], stage);
      if (!p.labels.includes(CURRENT) || !p.labels.includes(PLACEHOLDER_LABEL)) {
        // the token's version already existed without its labels (earlier attempt, labels since removed)
        st = await this.state(stage);
        await this.attach(st, PLACEHOLDER_LABEL, p.versionId, stage);
        st = await this.state(stage);
        await this.moveCurrent(st, p.versionId, stage);
      }
      st = await this.state(stage);
      if (!st.current) {
        throw new KeyrotorError(
          'STORE_CONFLICT',
          `${this.label}: could not establish a placeholder AWSCURRENT before staging`,
          { stage, retryable: true },
        );
      }
    }

    let value: string;
    if (this.jsonKey) {
      // the current version's content as check() just read it, else read it
      const raw = known && known.id === st.current.id ? known.raw.reveal() : await this.getString(st.current.id, stage);
      let base: Record<string, unknown>;
      if (st.current.placeholder) {
        try {
          base = this.parseObject(raw, st.current.id, stage);
        } catch {
          base = {}; // a plain-text placeholder (jsonKey added later): start from an empty object
        }
      } else {
        base = this.parseObject(raw, st.current.id, stage);
      }
      value = JSON.stringify({ ...base, [this.jsonKey]: req.secret.reveal() });
    } else {
      value = req.secret.reveal();
    }

    let token = requestToken('stage', rotationId);
    if (native) {
      // bind AWS's token to this rotation before writing (write-ahead): no other rotation may use it
      const key = nativeTokenKey(this.secretId);
      if (!parseNativeToken(this.providerState.get(key))?.rotationId)
        await this.providerState.set(key, formatNativeToken({ token: native, rotationId }));
      this.log.info(
        { stage, versionId: native },
        'staging into the version Secrets Manager rotation asked for (its ClientRequestToken)',
      );
      token = native;
    }
    const res = await this.put(value, token, [PENDING, label], stage, [req.secret.reveal()]);
    if (res.labels.includes(PENDING) && res.labels.includes(label) && this.model) {
      applyPut(this.model, res.versionId, [PENDING, label]);
      return { versionId: res.versionId, fresh: true };
    }
    this.model = undefined;
    if (!res.labels.includes(PENDING) || !res.labels.includes(label)) {
      // PutSecretValue was a no-op: this rotation's version exists (same token, same content) but lost
      // its labels (e.g. unstaged earlier). Put them back.
      st = await this.state(stage);
      await this.attach(st, label, res.versionId, stage);
      st = await this.state(stage);
      this.assertNotLocked(st, rotationId);
      await this.attach(st, PENDING, res.versionId, stage);
    }
    return { versionId: res.versionId, fresh: false };
  }

  /**
   * The token Secrets Manager's native rotation chose (recorded by the Lambda handler), if this rotation
   * may write into it: not bound to another rotation, and its version (when AWS lists it) is pending and
   * either empty of keyrotor labels or already this rotation's. Otherwise undefined (derived token).
   */
  private nativeToken(st: LabelState, rotationId: string): string | undefined {
    const n = parseNativeToken(this.providerState.get(nativeTokenKey(this.secretId)));
    if (!n || (n.rotationId && n.rotationId !== rotationId)) return undefined;
    const v = st.versions.find((x) => x.id === n.token);
    if (!v) return n.token; // AWS lists it without labels, or not at all yet
    if (v.has(CURRENT) || v.has(PREVIOUS)) return undefined;
    if (v.meta) return v.meta.rotationId === rotationId ? n.token : undefined;
    return v.has(PENDING) ? n.token : undefined;
  }

  private assertNotLocked(st: LabelState, rotationId: string, nativeToken?: string): void {
    const p = st.pending;
    if (!p || p.meta?.rotationId === rotationId) return;
    if (nativeToken && p.id === nativeToken && !p.meta) return; // the version AWS created for this rotation
    if (p.meta) {
      throw new KeyrotorError(
        'LOCKED',
        `${this.label} has version ${p.id} pending for another rotation (${p.meta.rotationId}); refusing to stage rotation ${rotationId}`,
        { stage: 'stage', retryable: false, hint: `finish or roll back rotation ${p.meta.rotationId} first` },
      );
    }
    throw new KeyrotorError(
      'LOCKED',
      `${this.label} has version ${p.id} labelled AWSPENDING that keyrotor did not stage (a Secrets Manager rotation in progress?); refusing to stage rotation ${rotationId}`,
      {
        stage: 'stage',
        retryable: false,
        hint: `let that rotation finish, or remove the label: aws secretsmanager update-secret-version-stage --secret-id ${this.secretId} --version-stage AWSPENDING --remove-from-version-id ${p.id}`,
      },
    );
  }

  async promote(rotationId: string): Promise<void> {
    const k = this.memo.take({ step: 'promote', rotationId });
    // fresh path: the labels as stage left them, then as each successful update changes them
    this.model = k ? cloneModel(k.model) : undefined;
    try {
      await this.promoteIn(rotationId);
    } finally {
      this.model = undefined;
    }
  }

  private async promoteIn(rotationId: string): Promise<void> {
    const stage: Stage = 'promote';
    let st = await this.view(stage);
    let ours = st.byRotation(rotationId);
    if (!ours) {
      throw new KeyrotorError(
        'STORE_CONFLICT',
        `${this.label} holds no version staged by rotation ${rotationId}; nothing to promote`,
        {
          stage,
          retryable: false,
        },
      );
    }
    if (!ours.has(CURRENT)) {
      // remember which version was AWSPREVIOUS, so demote can put it back (one more label call)
      const prev = st.previous;
      const mark = prevOfLabel(rotationId);
      if (prev && prev.id !== ours.id && !st.withLabel(mark)) {
        await this.attach(st, mark, prev.id, stage);
        st = await this.view(stage);
      }
      await this.moveCurrent(st, ours.id, stage);
      st = await this.view(stage);
      ours = st.byRotation(rotationId);
      if (!ours?.has(CURRENT)) {
        throw new KeyrotorError(
          'STORE_CONFLICT',
          `${this.label}: AWSCURRENT did not move to version of rotation ${rotationId}`,
          { stage, retryable: true },
        );
      }
    }
    await this.detach(ours, PENDING, stage);
    await this.sweep(rotationId);
  }

  async demote(rotationId: string): Promise<void> {
    const stage: Stage = 'demote';
    this.memo.forget();
    let st = await this.state(stage);
    let ours = st.byRotation(rotationId);
    if (!ours) return; // never staged, or unstaged already
    if (ours.has(CURRENT)) {
      let target = st.previous;
      if (!target) {
        // no previous to return to: make a placeholder current ("nothing current" for readers)
        target = st.versions.find((v) => v.placeholder && v !== ours);
        if (!target) {
          const text = this.jsonKey ? await this.withoutField(ours.id, stage) : PLACEHOLDER_TEXT;
          const p = await this.put(text, requestToken('empty', `${rotationId}/demote`), [PLACEHOLDER_LABEL], stage);
          st = await this.state(stage);
          if (!p.labels.includes(PLACEHOLDER_LABEL)) await this.attach(st, PLACEHOLDER_LABEL, p.versionId, stage);
          st = await this.state(stage);
          target = st.versions.find((v) => v.id === p.versionId);
        }
      }
      if (!target)
        throw new KeyrotorError('STORE_CONFLICT', `${this.label}: no version to move AWSCURRENT back to`, {
          stage,
          retryable: true,
        });
      await this.moveCurrent(st, target.id, stage);
      st = await this.state(stage);
      ours = st.byRotation(rotationId);
      if (!ours) return;
    }
    // AWSPREVIOUS now sits on the rejected version: put it back where it was before promote
    const mark = prevOfLabel(rotationId);
    const before = st.withLabel(mark);
    if (ours.has(PREVIOUS)) {
      if (before && before.id !== ours.id && !before.has(CURRENT)) {
        await this.attach(st, PREVIOUS, before.id, stage);
      } else {
        await this.detach(ours, PREVIOUS, stage);
      }
      st = await this.state(stage);
    }
    const marked = st.withLabel(mark);
    if (marked) await this.detach(marked, mark, stage);
  }

  /** JSON mode: the object of `versionId` without our field (placeholder content for a demote). */
  private async withoutField(versionId: string, stage: Stage): Promise<string> {
    const obj = this.parseObject(await this.getString(versionId, stage), versionId, stage);
    const { [this.jsonKey!]: _drop, ...rest } = obj;
    return JSON.stringify(rest);
  }

  async unstage(rotationId: string): Promise<void> {
    const stage: Stage = 'unstage';
    this.memo.forget();
    const st = await this.state(stage);
    const ours = st.byRotation(rotationId);
    if (!ours) return;
    if (ours.has(CURRENT)) {
      throw new KeyrotorError(
        'STORE_CONFLICT',
        `${this.label}: the version of rotation ${rotationId} is current; demote it before unstage`,
        {
          stage,
          retryable: false,
        },
      );
    }
    // AWSPENDING first: if we stop between the two calls, the version is not pending (no lock left
    // behind) and the next unstage still finds it by its rotation label.
    await this.detach(ours, PENDING, stage);
    for (const l of ours.labels) if (l.startsWith(META_PREFIX)) await this.detach(ours, l, stage);
  }

  /**
   * Usually 2 label calls per rotation: each rotation adds a `kr:` and a `kr-prev:` label; removing the
   * pair two rotations old keeps the secret under the Secrets Manager cap on staging labels.
   * Keep the label count bounded after a promote: versions that are no longer current, previous,
   * pending or needed by this rotation's demote lose keyrotor's labels (and become deprecated if they
   * hold no others), and `kr-prev:` marks of older rotations go. Best effort: failures are logged only.
   */
  private async sweep(rotationId: string): Promise<void> {
    try {
      const st = await this.view('promote');
      const mark = prevOfLabel(rotationId);
      for (const v of st.versions) {
        const keep = v.has(CURRENT) || v.has(PREVIOUS) || v.has(PENDING) || v.has(mark);
        for (const l of v.labels) {
          if (!isOurLabel(l) || l === mark) continue;
          if (keep && !l.startsWith(PREV_OF_PREFIX)) continue;
          await this.detach(v, l, 'promote');
        }
      }
    } catch (e) {
      this.log.warn(
        { stage: 'promote', err: e instanceof KeyrotorError ? e.toRecord() : { message: 'sweep failed' } },
        'could not remove stale keyrotor labels',
      );
    }
  }
}
