// The parts of Drive's request language the double understands: the `q`
// search query of files.list and the `fields` partial-response selector.
//
// q grammar (a subset of https://developers.google.com/drive/api/guides/search-files):
//   expr    := or
//   or      := and ("or" and)*
//   and     := unary ("and" unary)*
//   unary   := "not" unary | "(" expr ")" | term
//   term    := field op value | string "in" field
//   field   := name | mimeType | trashed | starred
//   op      := "=" | "!=" | "contains"
//   value   := 'string' (\' and \\ escapes) | true | false
// Keywords are case-insensitive; field names are not, as at Google.

export class QueryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "QueryError";
  }
}

/** What a query can look at. */
export interface Queryable {
  name: string;
  mimeType: string;
  parents: string[];
  trashed: boolean;
  starred: boolean;
}

export type Predicate = (file: Queryable) => boolean;

type Token =
  | { type: "string"; value: string }
  | { type: "word"; value: string }
  | { type: "op"; value: "=" | "!=" | "(" | ")" };

function tokenize(q: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < q.length) {
    const c = q[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === "'" || c === '"') {
      let value = "";
      i++;
      for (;;) {
        if (i >= q.length) throw new QueryError("unterminated string");
        const d = q[i]!;
        if (d === "\\") {
          const next = q[i + 1];
          if (next === undefined) throw new QueryError("dangling escape");
          value += next;
          i += 2;
          continue;
        }
        if (d === c) {
          i++;
          break;
        }
        value += d;
        i++;
      }
      tokens.push({ type: "string", value });
      continue;
    }
    if (c === "(" || c === ")" || c === "=") {
      tokens.push({ type: "op", value: c });
      i++;
      continue;
    }
    if (c === "!" && q[i + 1] === "=") {
      tokens.push({ type: "op", value: "!=" });
      i += 2;
      continue;
    }
    const word = /^[A-Za-z_][A-Za-z0-9_.]*/.exec(q.slice(i));
    if (!word) throw new QueryError(`unexpected character "${c}"`);
    tokens.push({ type: "word", value: word[0] });
    i += word[0].length;
  }
  return tokens;
}

const stringFields = new Set(["name", "mimeType"]);
const boolFields = new Set(["trashed", "starred"]);

/** Compiles a Drive `q` expression; throws QueryError when it is not one the double supports. */
export function compileQuery(q: string): Predicate {
  const tokens = tokenize(q);
  let at = 0;
  const peek = () => tokens[at];
  const isWord = (token: Token | undefined, word: string) =>
    token?.type === "word" && token.value.toLowerCase() === word;

  const term = (): Predicate => {
    const first = tokens[at++];
    if (!first) throw new QueryError("query ended early");
    if (first.type === "string") {
      if (!isWord(tokens[at], "in")) throw new QueryError("expected 'in' after a string");
      at++;
      const field = tokens[at++];
      if (field?.type !== "word" || field.value !== "parents")
        throw new QueryError("only '<id>' in parents is supported");
      const id = first.value;
      return (file) => file.parents.includes(id);
    }
    if (first.type !== "word") throw new QueryError("expected a field name");
    const field = first.value;
    const op = tokens[at++];
    const opValue =
      op?.type === "op" && (op.value === "=" || op.value === "!=")
        ? op.value
        : isWord(op, "contains")
          ? "contains"
          : undefined;
    if (!opValue) throw new QueryError(`expected an operator after ${field}`);
    const value = tokens[at++];
    if (!value) throw new QueryError("query ended early");
    if (stringFields.has(field)) {
      if (value.type !== "string") throw new QueryError(`${field} compares with a quoted string`);
      const key = field as "name" | "mimeType";
      const v = value.value;
      if (opValue === "=") return (file) => file[key] === v;
      if (opValue === "!=") return (file) => file[key] !== v;
      if (key !== "name") throw new QueryError("contains is supported on name only");
      // Drive's `name contains` is a prefix match on words; the double matches substrings.
      return (file) => file.name.toLowerCase().includes(v.toLowerCase());
    }
    if (boolFields.has(field)) {
      if (value.type !== "word" || !["true", "false"].includes(value.value.toLowerCase()))
        throw new QueryError(`${field} compares with true or false`);
      if (opValue === "contains") throw new QueryError(`${field} does not support contains`);
      const want = value.value.toLowerCase() === "true";
      const key = field as "trashed" | "starred";
      return opValue === "=" ? (file) => file[key] === want : (file) => file[key] !== want;
    }
    throw new QueryError(`unsupported field "${field}"`);
  };

  const unary = (): Predicate => {
    const token = peek();
    if (isWord(token, "not")) {
      at++;
      const inner = unary();
      return (file) => !inner(file);
    }
    if (token?.type === "op" && token.value === "(") {
      at++;
      const inner = or();
      const close = tokens[at++];
      if (close?.type !== "op" || close.value !== ")") throw new QueryError("missing )");
      return inner;
    }
    return term();
  };

  const and = (): Predicate => {
    const parts = [unary()];
    while (isWord(peek(), "and")) {
      at++;
      parts.push(unary());
    }
    return parts.length === 1 ? parts[0]! : (file) => parts.every((p) => p(file));
  };

  const or = (): Predicate => {
    const parts = [and()];
    while (isWord(peek(), "or")) {
      at++;
      parts.push(and());
    }
    return parts.length === 1 ? parts[0]! : (file) => parts.some((p) => p(file));
  };

  if (tokens.length === 0) return () => true;
  const predicate = or();
  if (at !== tokens.length) throw new QueryError("unexpected text after the query");
  return predicate;
}

/** Quotes a value for a q string literal, as a client must. */
export function quote(value: string): string {
  return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
}

// ---------------------------------------------------------------------------
// fields: "id,name", "files(id,name),nextPageToken", "files/id", "*".

/** A parsed selector: `true` selects the whole value, a map selects sub-fields. */
export type Selection = true | Map<string, Selection>;

export function parseFields(spec: string): Selection {
  const text = spec.replace(/\s+/g, "");
  if (text === "" || text === "*") return true;
  let at = 0;
  const list = (): Map<string, Selection> => {
    const out = new Map<string, Selection>();
    for (;;) {
      const match = /^(\*|[A-Za-z_][A-Za-z0-9_]*(?:\/[A-Za-z_*][A-Za-z0-9_]*)*)/.exec(text.slice(at));
      if (!match) throw new QueryError(`Invalid field selection ${text}`);
      at += match[0].length;
      const path = match[0].split("/");
      let sub: Selection = true;
      if (text[at] === "(") {
        at++;
        sub = list();
        if (text[at] !== ")") throw new QueryError(`Invalid field selection ${text}`);
        at++;
      }
      // a/b/c(x) nests as {a: {b: {c: x}}}
      for (let i = path.length - 1; i >= 1; i--) sub = new Map([[path[i]!, sub]]);
      merge(out, path[0]!, sub);
      if (text[at] === ",") {
        at++;
        continue;
      }
      return out;
    }
  };
  const result = list();
  if (at !== text.length) throw new QueryError(`Invalid field selection ${text}`);
  return result;
}

function merge(into: Map<string, Selection>, key: string, sel: Selection): void {
  const existing = into.get(key);
  if (existing === undefined || sel === true) into.set(key, sel);
  else if (existing !== true) for (const [k, v] of sel) merge(existing, k, v);
}

/** Top-level names a selection asks for ("*" excluded). */
export function selectedNames(sel: Selection): string[] {
  return sel === true ? [] : [...sel.keys()].filter((k) => k !== "*");
}

/** Applies a selection to a JSON value; arrays apply it to each element. */
export function applyFields(value: unknown, sel: Selection): unknown {
  if (sel === true || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((item) => applyFields(item, sel));
  if (sel.has("*")) return value;
  const out: Record<string, unknown> = {};
  const record = value as Record<string, unknown>;
  for (const [key, sub] of sel) {
    if (key in record && record[key] !== undefined) out[key] = applyFields(record[key], sub);
  }
  return out;
}
