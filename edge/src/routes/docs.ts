// GET /api/docs: a readable API reference, rendered on the server from the
// same OpenAPI document /api/openapi.json serves. One self-contained HTML page
// (no scripts, no CDN, one inline stylesheet allowed by its hash), so it works
// offline and under a strict Content-Security-Policy.
import { type Context, Hono } from "hono";
import type { AppEnv } from "../env.ts";
import { apiContentSecurityPolicy } from "../security/index.ts";

export interface SchemaObject {
  type?: string | string[];
  format?: string;
  description?: string;
  properties?: Record<string, SchemaObject>;
  required?: string[];
  items?: SchemaObject;
  additionalProperties?: boolean | SchemaObject;
  enum?: unknown[];
  const?: unknown;
  default?: unknown;
  example?: unknown;
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  minItems?: number;
  maxItems?: number;
  nullable?: boolean;
  anyOf?: SchemaObject[];
  oneOf?: SchemaObject[];
  allOf?: SchemaObject[];
  $ref?: string;
}

interface MediaObject {
  schema?: SchemaObject;
}

interface Parameter {
  name: string;
  in: string;
  required?: boolean;
  description?: string;
  schema?: SchemaObject;
}

interface Operation {
  summary?: string;
  description?: string;
  tags?: string[];
  operationId?: string;
  parameters?: Parameter[];
  security?: Record<string, string[]>[];
  requestBody?: { required?: boolean; description?: string; content?: Record<string, MediaObject> };
  responses?: Record<string, { description?: string; content?: Record<string, MediaObject> }>;
}

export interface OpenApiDocument {
  openapi: string;
  info: { title: string; version: string; description?: string };
  paths?: Record<string, Record<string, Operation>>;
  components?: {
    schemas?: Record<string, SchemaObject>;
    securitySchemes?: Record<string, { type: string; description?: string }>;
  };
}

const methods = ["get", "post", "put", "patch", "delete", "head", "options"] as const;

const escapeHtml = (text: string) =>
  text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;");

/** Escaped text with `backticks` as code, the only markup descriptions use. */
const prose = (text: string) => escapeHtml(text).replace(/`([^`]+)`/g, "<code>$1</code>");

const anchor = (method: string, path: string) =>
  `op-${method}-${path.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "")}`;

const errorSchemaName = "Error";

const refName = (ref: string) => ref.split("/").pop() ?? ref;

class Renderer {
  readonly #schemas: Record<string, SchemaObject>;
  constructor(doc: OpenApiDocument) {
    this.#schemas = doc.components?.schemas ?? {};
  }

  #resolve(schema: SchemaObject): SchemaObject {
    return schema.$ref ? (this.#schemas[refName(schema.$ref)] ?? {}) : schema;
  }

  /** The properties of an object schema, including those it inherits through allOf. */
  #merged(schema: SchemaObject): { properties: Record<string, SchemaObject>; required: Set<string> } {
    const properties: Record<string, SchemaObject> = {};
    const required = new Set<string>();
    for (const part of [schema, ...(schema.allOf ?? []).map((p) => this.#resolve(p))]) {
      if (part !== schema && part.allOf) {
        const inner = this.#merged(part);
        Object.assign(properties, inner.properties);
        for (const r of inner.required) required.add(r);
      }
      Object.assign(properties, part.properties ?? {});
      for (const r of part.required ?? []) required.add(r);
    }
    return { properties, required };
  }

  /** A one-line type: `string (uuid)`, `array of ApiToken`, `"a" | "b"`, `string | null`. */
  typeOf(schema: SchemaObject): string {
    if (schema.$ref) return refName(schema.$ref);
    if (schema.const !== undefined) return JSON.stringify(schema.const);
    if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
    const variants = schema.anyOf ?? schema.oneOf;
    if (variants) return variants.map((s) => this.typeOf(s)).join(" | ");
    if (schema.allOf) return schema.allOf.map((s) => (s.$ref ? refName(s.$ref) : "object")).join(" & ");
    const types = Array.isArray(schema.type) ? schema.type : schema.type ? [schema.type] : [];
    const named = types.map((t) => {
      if (t === "array") return `array of ${schema.items ? this.typeOf(schema.items) : "any"}`;
      return schema.format && t !== "null" ? `${t} (${schema.format})` : t;
    });
    if (schema.nullable) named.push("null");
    return named.join(" | ") || "any";
  }

  #constraints(schema: SchemaObject): string[] {
    const notes: string[] = [];
    if (schema.minLength !== undefined) notes.push(`min length ${schema.minLength}`);
    if (schema.maxLength !== undefined) notes.push(`max length ${schema.maxLength}`);
    if (schema.minimum !== undefined) notes.push(`≥ ${schema.minimum}`);
    if (schema.maximum !== undefined) notes.push(`≤ ${schema.maximum}`);
    if (schema.minItems !== undefined) notes.push(`at least ${schema.minItems} items`);
    if (schema.maxItems !== undefined) notes.push(`at most ${schema.maxItems} items`);
    if (schema.pattern) notes.push(`pattern ${schema.pattern}`);
    if (schema.default !== undefined) notes.push(`default ${JSON.stringify(schema.default)}`);
    if (schema.example !== undefined) notes.push(`example ${JSON.stringify(schema.example)}`);
    return notes;
  }

  /** A schema as nested property lists, following $refs (and stopping on cycles). */
  schema(schema: SchemaObject, seen: ReadonlySet<string> = new Set()): string {
    const name = schema.$ref ? refName(schema.$ref) : undefined;
    if (name && seen.has(name)) return "";
    // The one error shape is described once, at the top of the page.
    if (name === errorSchemaName) return "";
    const next = name ? new Set([...seen, name]) : seen;
    const resolved = this.#resolve(schema);
    const body = resolved.type === "array" && resolved.items ? this.#resolve(resolved.items) : resolved;
    const nested =
      resolved.type === "array" && resolved.items?.$ref
        ? new Set([...next, refName(resolved.items.$ref)])
        : next;
    const variants = body.anyOf ?? body.oneOf;
    if (variants) return variants.map((v) => this.schema(v, nested)).join("");
    const { properties, required } = this.#merged(body);
    if (Object.keys(properties).length === 0) return "";
    const items = Object.entries(properties).map(([prop, child]) => {
      const target = this.#resolve(child);
      const notes = this.#constraints(target);
      const description = target.description ?? child.description;
      return `<li><code class="prop">${escapeHtml(prop)}</code> <span class="type">${escapeHtml(this.typeOf(child))}</span>${
        required.has(prop) ? ' <span class="req">required</span>' : ""
      }${description ? ` — ${prose(description)}` : ""}${
        notes.length ? ` <span class="note">(${escapeHtml(notes.join(", "))})</span>` : ""
      }${this.schema(child, nested)}</li>`;
    });
    return `<ul class="props">${items.join("")}</ul>`;
  }

  content(content: Record<string, MediaObject> | undefined): string {
    if (!content) return "";
    return Object.entries(content)
      .map(
        ([type, media]) =>
          `<div class="media"><span class="ctype">${escapeHtml(type)}</span>${
            media.schema
              ? ` <span class="type">${escapeHtml(this.typeOf(media.schema))}</span>${this.schema(media.schema)}`
              : ""
          }</div>`,
      )
      .join("");
  }
}

function operation(r: Renderer, doc: OpenApiDocument, method: string, path: string, op: Operation): string {
  const parts: string[] = [];
  parts.push(
    `<h3><span class="method ${method}">${method.toUpperCase()}</span> <code class="path">${escapeHtml(path)}</code></h3>`,
  );
  if (op.summary) parts.push(`<p class="summary">${prose(op.summary)}</p>`);
  if (op.description) parts.push(`<p>${prose(op.description)}</p>`);
  if (op.security?.length) {
    const schemes = doc.components?.securitySchemes ?? {};
    const ways = op.security
      .flatMap((req) => Object.keys(req))
      .map((name) => {
        const scheme = schemes[name];
        return `<code>${escapeHtml(name)}</code>${scheme?.description ? ` (${prose(scheme.description)})` : ""}`;
      });
    parts.push(`<p class="auth">Authentication: ${ways.join(" or ")}</p>`);
  }
  if (op.parameters?.length) {
    const rows = op.parameters.map(
      (p) =>
        `<tr><td><code>${escapeHtml(p.name)}</code></td><td>${escapeHtml(p.in)}</td><td>${
          p.schema ? escapeHtml(r.typeOf(p.schema)) : ""
        }</td><td>${p.required ? "yes" : "no"}</td><td>${prose(p.description ?? p.schema?.description ?? "")}</td></tr>`,
    );
    parts.push(
      `<h4>Parameters</h4><table><thead><tr><th>name</th><th>in</th><th>type</th><th>required</th><th>description</th></tr></thead><tbody>${rows.join("")}</tbody></table>`,
    );
  }
  if (op.requestBody) {
    parts.push(
      `<h4>Request body${op.requestBody.required ? " (required)" : ""}</h4>${
        op.requestBody.description ? `<p>${prose(op.requestBody.description)}</p>` : ""
      }${r.content(op.requestBody.content)}`,
    );
  }
  const responses = Object.entries(op.responses ?? {});
  if (responses.length) {
    const items = responses.map(
      ([status, response]) =>
        `<li><span class="status s${escapeHtml(status.charAt(0))}">${escapeHtml(status)}</span> ${prose(
          response.description ?? "",
        )}${r.content(response.content)}</li>`,
    );
    parts.push(`<h4>Responses</h4><ul class="responses">${items.join("")}</ul>`);
  }
  return `<section class="op" id="${anchor(method, path)}">${parts.join("")}</section>`;
}

export const docsStyle = `
:root{color-scheme:light dark;--fg:#1d2330;--muted:#5b6475;--line:#d9dde5;--bg:#fff;--code:#f3f5f8}
@media (prefers-color-scheme:dark){:root{--fg:#e6e9ef;--muted:#9aa3b5;--line:#343a46;--bg:#14171c;--code:#1f242c}}
body{font:15px/1.5 system-ui,sans-serif;color:var(--fg);background:var(--bg);margin:0 auto;max-width:980px;padding:24px}
h1{margin:0 0 4px}h2{margin-top:32px;border-bottom:1px solid var(--line)}h3{margin:0 0 6px;font-size:17px}
h4{margin:14px 0 4px;font-size:14px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
code{font:13px ui-monospace,monospace;background:var(--code);padding:1px 4px;border-radius:4px}
.op{border:1px solid var(--line);border-radius:8px;padding:14px 16px;margin:14px 0}
.method{display:inline-block;min-width:56px;text-align:center;font:600 12px ui-monospace,monospace;color:#fff;border-radius:4px;padding:3px 6px;background:#6b7280}
.get{background:#2563eb}.post{background:#16a34a}.put,.patch{background:#d97706}.delete{background:#dc2626}
.summary{font-weight:600;margin:4px 0}.auth,.note{color:var(--muted)}.type{color:#7c3aed;font-size:13px}
.req{color:#dc2626;font-size:12px}.status{font:600 13px ui-monospace,monospace}.s2{color:#16a34a}.s3{color:#2563eb}.s4{color:#d97706}.s5{color:#dc2626}
.ctype{font-size:12px;color:var(--muted)}ul.props{margin:4px 0;padding-left:20px}ul.responses{padding-left:18px}
table{border-collapse:collapse;font-size:14px}td,th{border:1px solid var(--line);padding:4px 8px;text-align:left}
nav>ul{columns:2;column-gap:32px;padding-left:0;list-style:none}nav>ul>li{break-inside:avoid;margin-bottom:10px}
nav ul ul{padding-left:0;list-style:none}nav ul ul li{margin:3px 0}nav a{text-decoration:none}
`;

function errorSection(r: Renderer, doc: OpenApiDocument): string {
  const schema = doc.components?.schemas?.[errorSchemaName];
  if (!schema) return "";
  return `<section class="op" id="errors"><h3>Errors</h3><p>Every failure (4xx, 5xx) has this JSON body; <code>code</code> is stable and meant for programs, <code>message</code> is for people.</p>${r.schema(schema)}</section>`;
}

/** The whole reference page for a document. */
export function renderReference(doc: OpenApiDocument): string {
  const r = new Renderer(doc);
  const byTag = new Map<string, string[]>();
  const toc = new Map<string, string[]>();
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const method of methods) {
      const op = item[method];
      if (!op) continue;
      const tag = op.tags?.[0] ?? "Other";
      if (!byTag.has(tag)) {
        byTag.set(tag, []);
        toc.set(tag, []);
      }
      byTag.get(tag)!.push(operation(r, doc, method, path, op));
      toc
        .get(tag)!
        .push(
          `<li><a href="#${anchor(method, path)}"><span class="method ${method}">${method.toUpperCase()}</span> <code>${escapeHtml(path)}</code></a>${
            op.summary ? ` ${prose(op.summary)}` : ""
          }</li>`,
        );
    }
  }
  const sections = [...byTag].map(
    ([tag, ops]) => `<h2 id="tag-${escapeHtml(tag)}">${escapeHtml(tag)}</h2>${ops.join("")}`,
  );
  const contents = [...toc].map(
    ([tag, items]) => `<li><strong>${escapeHtml(tag)}</strong><ul>${items.join("")}</ul></li>`,
  );
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(doc.info.title)} ${escapeHtml(doc.info.version)} — reference</title><style>${docsStyle}</style></head>
<body><header><h1>${escapeHtml(doc.info.title)}</h1><p>Version ${escapeHtml(doc.info.version)}${
    doc.info.description ? ` — ${prose(doc.info.description.replace(/\.$/, ""))}` : ""
  }. Machine-readable: <a href="/api/openapi.json">/api/openapi.json</a> (OpenAPI ${escapeHtml(doc.openapi)}).</p></header>
<nav><ul>${contents.join("")}</ul></nav>
${errorSection(r, doc)}
<main>${sections.join("")}</main></body></html>`;
}

let styleHash: Promise<string> | undefined;
async function sha256Base64(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  let binary = "";
  for (const b of digest) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** The API's policy, plus exactly this page's stylesheet. */
export async function docsContentSecurityPolicy(): Promise<string> {
  styleHash ??= sha256Base64(docsStyle);
  const directives: Record<string, string[]> = {
    ...apiContentSecurityPolicy,
    styleSrc: [`'sha256-${await styleHash}'`],
  };
  return Object.entries(directives)
    .map(([name, values]) => `${name.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`)} ${values.join(" ")}`)
    .join("; ");
}

/** Where the reference reads the OpenAPI document from: the app's own /api/openapi.json (app.ts passes it). */
export type OpenApiSource = (env: AppEnv["Bindings"]) => Response | Promise<Response>;

async function openApiDocument(c: Context<AppEnv>, source: OpenApiSource): Promise<OpenApiDocument> {
  const response = await source(c.env);
  if (!response.ok) throw new Error(`the OpenAPI document answered ${response.status}`);
  return (await response.json()) as OpenApiDocument;
}

/** The reference page, rendered from the document `source` answers at request time. */
export function docsRoute(source: OpenApiSource) {
  return new Hono<AppEnv>().get("/", async (c) => {
    const html = renderReference(await openApiDocument(c, source));
    c.header("Content-Security-Policy", await docsContentSecurityPolicy());
    c.header("Cache-Control", "no-cache");
    return c.html(html);
  });
}
