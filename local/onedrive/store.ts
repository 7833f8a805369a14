// What the OneDrive double holds: each account's drive (folders and files
// under the app's folder, names compared without case as OneDrive does),
// file bytes on disk, and open upload sessions.
import { randomBytes } from "node:crypto";
import { appendFileSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface Item {
  id: string;
  name: string;
  parentId: string | null;
  accountId: string;
  folder: boolean;
  size: number;
  quickXorHash?: string;
  createdDateTime: string;
}

export interface Session {
  id: string;
  accountId: string;
  parentNames: string[];
  name: string;
  size: number | undefined;
  received: number;
  expiresAt: number;
  state: "open" | "done" | "cancelled" | "expired";
  /** Bytes that arrived again for offsets the session already held. */
  resent: number;
  /** A fault: the file is stored with its first byte changed. */
  corrupt?: boolean;
}

/**
 * quickXorHash as its definition reads: byte k of the content XORed into a
 * 160-bit register at bit (11·k) mod 160, circularly, then the length (64-bit
 * little endian) XORed into the last 8 bytes; base64. Written apart from the
 * worker's lane-folding version so each checks the other.
 */
export function quickXorHash(content: Buffer): string {
  const register = new Uint8Array(20);
  for (let k = 0; k < content.length; k++) {
    const byte = content[k]!;
    if (byte === 0) continue;
    const start = (11 * k) % 160;
    for (let bit = 0; bit < 8; bit++) {
      if ((byte >> bit) & 1) {
        const at = (start + bit) % 160;
        register[at >> 3]! ^= 1 << (at & 7);
      }
    }
  }
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(content.length));
  for (let i = 0; i < 8; i++) register[12 + i]! ^= length[i]!;
  return Buffer.from(register).toString("base64");
}

export class OneDriveStore {
  readonly items = new Map<string, Item>();
  readonly sessions = new Map<string, Session>();
  /** Each account's app folder (Apps/<app>) id. */
  readonly appRoots = new Map<string, string>();
  readonly #dir: string;

  constructor(dataDir: string) {
    this.#dir = dataDir;
    mkdirSync(join(dataDir, "files"), { recursive: true });
    mkdirSync(join(dataDir, "sessions"), { recursive: true });
  }

  newId(): string {
    return randomBytes(12).toString("hex").toUpperCase();
  }

  appRoot(accountId: string): Item {
    let id = this.appRoots.get(accountId);
    if (!id) {
      const apps = this.#add({ name: "Apps", parentId: null, accountId, folder: true, size: 0 });
      id = this.#add({ name: "TorreClou", parentId: apps.id, accountId, folder: true, size: 0 }).id;
      this.appRoots.set(accountId, id);
    }
    return this.items.get(id)!;
  }

  #add(fields: Omit<Item, "id" | "createdDateTime">): Item {
    const item: Item = { ...fields, id: this.newId(), createdDateTime: new Date().toISOString() };
    this.items.set(item.id, item);
    return item;
  }

  child(parentId: string, name: string): Item | undefined {
    const wanted = name.toLowerCase();
    for (const item of this.items.values())
      if (item.parentId === parentId && item.name.toLowerCase() === wanted) return item;
    return undefined;
  }

  /** The item at names under the account's app folder, if any. */
  lookup(accountId: string, names: string[]): Item | undefined {
    let item: Item | undefined = this.appRoot(accountId);
    for (const name of names) {
      item = item.folder ? this.child(item.id, name) : undefined;
      if (!item) return undefined;
    }
    return item;
  }

  /** The folder at names, created as needed; undefined when a file stands in the way. */
  folder(accountId: string, names: string[]): Item | undefined {
    let item = this.appRoot(accountId);
    for (const name of names) {
      const next =
        this.child(item.id, name) ?? this.#add({ name, parentId: item.id, accountId, folder: true, size: 0 });
      if (!next.folder) return undefined;
      item = next;
    }
    return item;
  }

  used(accountId: string): number {
    let used = 0;
    for (const item of this.items.values())
      if (item.accountId === accountId && !item.folder) used += item.size;
    return used;
  }

  sessionPath(id: string): string {
    return join(this.#dir, "sessions", id);
  }

  openSession(fields: Omit<Session, "id" | "received" | "state" | "resent">): Session {
    const session: Session = {
      ...fields,
      id: randomBytes(16).toString("base64url"),
      received: 0,
      state: "open",
      resent: 0,
    };
    writeFileSync(this.sessionPath(session.id), "");
    this.sessions.set(session.id, session);
    return session;
  }

  append(session: Session, bytes: Buffer): void {
    appendFileSync(this.sessionPath(session.id), bytes);
    session.received += bytes.length;
  }

  /** Turns a complete session into a file, replacing one of the same name. */
  commit(session: Session, parentId: string): Item {
    const old = this.child(parentId, session.name);
    if (old) this.remove(old.id);
    const content = readFileSync(this.sessionPath(session.id));
    if (session.corrupt && content.length > 0) {
      content[0] = content[0]! ^ 0xff;
      writeFileSync(this.sessionPath(session.id), content);
    }
    const item = this.#add({
      name: session.name,
      parentId,
      accountId: session.accountId,
      folder: false,
      size: content.length,
      quickXorHash: quickXorHash(content),
    });
    renameSync(this.sessionPath(session.id), join(this.#dir, "files", item.id));
    session.state = "done";
    return item;
  }

  content(id: string): Buffer {
    return readFileSync(join(this.#dir, "files", id));
  }

  remove(id: string): void {
    for (const item of [...this.items.values()]) if (item.parentId === id) this.remove(item.id);
    const item = this.items.get(id);
    if (item && !item.folder) rmSync(join(this.#dir, "files", id), { force: true });
    this.items.delete(id);
  }

  /** `a/b/c` of an item under the app folder. */
  pathOf(item: Item): string {
    const names: string[] = [];
    let at: Item | undefined = item;
    const root = this.appRoots.get(item.accountId);
    while (at && at.id !== root) {
      names.unshift(at.name);
      at = at.parentId ? this.items.get(at.parentId) : undefined;
    }
    return names.join("/");
  }
}
