// A double's state kept in one JSON file in its data folder, so `npm run dev`
// restarted finds the grants, files and sessions it had (file bytes live
// beside it). Written whole to a temporary file and renamed over the old one.
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export class StateFile<T> {
  readonly #path: string;

  constructor(dataDir: string) {
    this.#path = join(dataDir, "state.json");
  }

  load(): T | undefined {
    if (!existsSync(this.#path)) return undefined;
    return JSON.parse(readFileSync(this.#path, "utf8")) as T;
  }

  save(state: T): void {
    const temporary = `${this.#path}.tmp`;
    writeFileSync(temporary, JSON.stringify(state));
    renameSync(temporary, this.#path);
  }
}
