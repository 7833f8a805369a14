// The Drive double's state on disk, so accounts, tokens, files and unfinished
// upload sessions survive a restart:
//
//   <dataDir>/state.json         accounts, tokens, file metadata, sessions
//   <dataDir>/blobs/<fileId>     a file's content
//   <dataDir>/sessions/<id>      bytes an upload session has committed so far
//
// state.json is rewritten whole (write + rename) after every change. A
// session's bytes are written before its committed offset is saved; on load,
// anything past the saved offset is cut off, as if never received.
import { createHash, randomBytes } from "node:crypto";
import {
  createReadStream,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";

export const FOLDER_MIME = "application/vnd.google-apps.folder";

export interface Account {
  id: string;
  email: string;
  rootId: string;
}

export interface RefreshToken {
  token: string;
  accountId: string;
  revoked: boolean;
}

export interface AccessToken {
  token: string;
  accountId: string;
  refreshToken: string;
  /** Epoch ms. */
  expiresAt: number;
  revoked: boolean;
}

export interface FileRecord {
  id: string;
  accountId: string;
  name: string;
  mimeType: string;
  parents: string[];
  trashed: boolean;
  starred: boolean;
  createdTime: string;
  modifiedTime: string;
  /** Content files only. */
  size?: number;
  md5?: string;
  /** Order of creation, for a stable listing order. */
  seq: number;
}

export interface SessionRecord {
  id: string;
  accountId: string;
  name: string;
  mimeType: string;
  parents: string[];
  /** `fields` of the initiating request: the completed file is returned with it. */
  fields: string | null;
  /** X-Upload-Content-Length, when the client declared it. */
  declaredLength: number | null;
  /** Total size once a Content-Range told it. */
  total: number | null;
  /** Bytes persisted, always from offset 0. */
  committed: number;
  createdAt: number;
  expiresAt: number;
  expired: boolean;
  /** Set once complete. */
  fileId: string | null;
  /**
   * The `Origin` the session was started with: Google then answers that
   * origin's CORS requests on the session URI, so a web page can send the
   * chunks itself.
   */
  origin?: string | undefined;
}

interface State {
  version: 1;
  seq: number;
  accounts: Account[];
  refreshTokens: RefreshToken[];
  accessTokens: AccessToken[];
  files: FileRecord[];
  sessions: SessionRecord[];
}

/** Drive-looking ids: 33 characters of base64url. */
export function newId(prefix = "1"): string {
  return (prefix + randomBytes(32).toString("base64url")).slice(0, 33);
}

export class DriveStore {
  readonly dataDir: string;
  readonly accounts = new Map<string, Account>();
  readonly refreshTokens = new Map<string, RefreshToken>();
  readonly accessTokens = new Map<string, AccessToken>();
  readonly files = new Map<string, FileRecord>();
  readonly sessions = new Map<string, SessionRecord>();
  #seq = 0;

  constructor(dataDir: string) {
    this.dataDir = dataDir;
    mkdirSync(join(dataDir, "blobs"), { recursive: true });
    mkdirSync(join(dataDir, "sessions"), { recursive: true });
    this.#load();
  }

  get #statePath(): string {
    return join(this.dataDir, "state.json");
  }

  #load(): void {
    if (!existsSync(this.#statePath)) return;
    const state = JSON.parse(readFileSync(this.#statePath, "utf8")) as State;
    this.#seq = state.seq;
    for (const a of state.accounts) this.accounts.set(a.id, a);
    for (const t of state.refreshTokens) this.refreshTokens.set(t.token, t);
    for (const t of state.accessTokens) this.accessTokens.set(t.token, t);
    for (const f of state.files) this.files.set(f.id, f);
    for (const s of state.sessions) {
      this.sessions.set(s.id, s);
      // Bytes written after the last saved offset were never acknowledged.
      const path = this.sessionPath(s.id);
      if (s.fileId === null && existsSync(path) && statSync(path).size > s.committed)
        truncateSync(path, s.committed);
    }
  }

  save(): void {
    const state: State = {
      version: 1,
      seq: this.#seq,
      accounts: [...this.accounts.values()],
      refreshTokens: [...this.refreshTokens.values()],
      accessTokens: [...this.accessTokens.values()],
      files: [...this.files.values()],
      sessions: [...this.sessions.values()],
    };
    const tmp = `${this.#statePath}.tmp`;
    writeFileSync(tmp, JSON.stringify(state));
    renameSync(tmp, this.#statePath);
  }

  nextSeq(): number {
    return ++this.#seq;
  }

  blobPath(fileId: string): string {
    return join(this.dataDir, "blobs", fileId);
  }

  sessionPath(sessionId: string): string {
    return join(this.dataDir, "sessions", sessionId);
  }

  createAccount(email: string): Account {
    for (const a of this.accounts.values()) if (a.email === email) return a;
    const account: Account = { id: newId("a"), email, rootId: newId("0A") };
    this.accounts.set(account.id, account);
    const now = new Date().toISOString();
    this.files.set(account.rootId, {
      id: account.rootId,
      accountId: account.id,
      name: "My Drive",
      mimeType: FOLDER_MIME,
      parents: [],
      trashed: false,
      starred: false,
      createdTime: now,
      modifiedTime: now,
      seq: this.nextSeq(),
    });
    this.save();
    return account;
  }

  mintRefreshToken(accountId: string): RefreshToken {
    const token: RefreshToken = {
      token: `1//${randomBytes(24).toString("base64url")}`,
      accountId,
      revoked: false,
    };
    this.refreshTokens.set(token.token, token);
    this.save();
    return token;
  }

  mintAccessToken(refresh: RefreshToken, ttlSeconds: number): AccessToken {
    const token: AccessToken = {
      token: `ya29.${randomBytes(32).toString("base64url")}`,
      accountId: refresh.accountId,
      refreshToken: refresh.token,
      expiresAt: Date.now() + ttlSeconds * 1000,
      revoked: false,
    };
    this.accessTokens.set(token.token, token);
    // Expired tokens are of no further use.
    for (const [key, t] of this.accessTokens)
      if (t.expiresAt < Date.now() - 3_600_000) this.accessTokens.delete(key);
    this.save();
    return token;
  }

  /** Revokes a grant: a refresh token and every access token minted from it. */
  revokeGrant(refreshToken: string): void {
    const refresh = this.refreshTokens.get(refreshToken);
    if (refresh) refresh.revoked = true;
    for (const t of this.accessTokens.values()) if (t.refreshToken === refreshToken) t.revoked = true;
    this.save();
  }

  /** Resolves `root` to the account's root folder id. */
  resolveId(accountId: string, id: string): string {
    if (id === "root") return this.accounts.get(accountId)?.rootId ?? id;
    return id;
  }

  fileOf(accountId: string, id: string): FileRecord | undefined {
    const file = this.files.get(this.resolveId(accountId, id));
    return file?.accountId === accountId ? file : undefined;
  }

  addFile(record: Omit<FileRecord, "seq">): FileRecord {
    const file = { ...record, seq: this.nextSeq() };
    this.files.set(file.id, file);
    this.save();
    return file;
  }

  /** Deletes a file and, for a folder, everything under it. */
  deleteTree(id: string): void {
    const doomed = new Set([id]);
    let grew = true;
    while (grew) {
      grew = false;
      for (const f of this.files.values()) {
        if (!doomed.has(f.id) && f.parents.some((p) => doomed.has(p))) {
          doomed.add(f.id);
          grew = true;
        }
      }
    }
    for (const d of doomed) {
      this.files.delete(d);
      rmSync(this.blobPath(d), { force: true });
    }
    this.save();
  }

  /** Finishes a session: its bytes become a file. */
  async completeSession(session: SessionRecord): Promise<FileRecord> {
    const id = newId();
    const blob = this.blobPath(id);
    const part = this.sessionPath(session.id);
    if (!existsSync(part)) writeFileSync(part, "");
    truncateSync(part, session.committed);
    renameSync(part, blob);
    const md5 = await md5Of(blob);
    const now = new Date().toISOString();
    const file = this.addFile({
      id,
      accountId: session.accountId,
      name: session.name,
      mimeType: session.mimeType,
      parents: session.parents,
      trashed: false,
      starred: false,
      createdTime: now,
      modifiedTime: now,
      size: session.committed,
      md5,
    });
    session.fileId = id;
    this.save();
    return file;
  }
}

export async function md5Of(path: string): Promise<string> {
  const hash = createHash("md5");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
