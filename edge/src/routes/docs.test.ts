import { describe, expect, it } from "vitest";
import { call } from "../../test/helpers.ts";
import { type OpenApiDocument, renderReference } from "./docs.ts";

async function openApi(): Promise<OpenApiDocument> {
  const response = await call("/api/openapi.json");
  expect(response.status).toBe(200);
  return (await response.json()) as OpenApiDocument;
}

describe("the OpenAPI document", () => {
  it("describes the token routes with their schemas and security", async () => {
    const doc = await openApi();
    const tokens = doc.paths?.["/api/tokens"];
    expect(tokens?.post?.summary).toBe("Create an API token");
    expect(tokens?.post?.requestBody?.content?.["application/json"]?.schema).toEqual({
      $ref: "#/components/schemas/CreateApiToken",
    });
    expect(Object.keys(tokens?.post?.responses ?? {})).toEqual(
      expect.arrayContaining(["201", "400", "401", "403"]),
    );
    expect(tokens?.post?.security).toEqual([{ session: [] }]);
    expect(tokens?.get?.summary).toBe("List your API tokens");
    expect(tokens?.get?.security).toEqual([{ session: [] }, { apiToken: [] }]);
    const revoke = doc.paths?.["/api/tokens/{id}"]?.delete;
    expect(revoke?.parameters?.[0]).toMatchObject({ name: "id", in: "path", required: true });
    expect(Object.keys(revoke?.responses ?? {})).toEqual(expect.arrayContaining(["204", "404"]));
    expect(JSON.stringify(doc.components?.schemas?.NewApiToken)).toContain('"token"');
    expect(doc.components?.schemas?.ApiToken?.properties).not.toHaveProperty("token");
    expect(doc.components?.securitySchemes).toMatchObject({
      session: { type: "apiKey" },
      apiToken: { type: "http" },
    });
  });

  it("describes Google sign-in", async () => {
    const doc = await openApi();
    expect(doc.paths?.["/api/auth/google"]?.get?.summary).toBe("Sign in with Google");
    expect(Object.keys(doc.paths?.["/api/auth/google/callback"]?.get?.responses ?? {})).toEqual(
      expect.arrayContaining(["302", "400", "401", "503"]),
    );
  });
});

describe("GET /api/docs", () => {
  it("renders every operation of the document as one self-contained page", async () => {
    const doc = await openApi();
    const response = await call("/api/docs");
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/html/);
    const html = await response.text();
    expect(html).toMatch(/^<!doctype html>/);
    expect(html).not.toMatch(/<script|<link|https?:\/\/(?!accounts\.google)[^"<\s]*\.(js|css)/i);
    for (const [path, item] of Object.entries(doc.paths ?? {})) {
      for (const method of Object.keys(item)) {
        expect(html).toContain(
          `<span class="method ${method}">${method.toUpperCase()}</span> <code class="path">${path.replaceAll("&", "&amp;")}</code>`,
        );
      }
    }
  });

  it("shows the token routes' summaries, bodies, parameters and responses", async () => {
    const html = await (await call("/api/docs")).text();
    const section = (id: string) => {
      const start = html.indexOf(`<section class="op" id="${id}">`);
      expect(start, id).toBeGreaterThanOrEqual(0);
      return html.slice(start, html.indexOf("</section>", start));
    };
    const create = section("op-post-api-tokens");
    expect(create).toContain("Create an API token");
    expect(create).toContain("Request body (required)");
    expect(create).toMatch(
      /<code class="prop">name<\/code> <span class="type">string<\/span> <span class="req">required<\/span>/,
    );
    expect(create).toMatch(/<span class="status s2">201<\/span>/);
    expect(create).toMatch(/<code class="prop">token<\/code>/);
    expect(create).toMatch(/<span class="status s4">403<\/span>/);
    expect(create).toContain("Authentication: <code>session</code>");

    const revoke = section("op-delete-api-tokens-id");
    expect(revoke).toContain("Revoke an API token");
    expect(revoke).toMatch(/<td><code>id<\/code><\/td><td>path<\/td><td>string \(uuid\)<\/td><td>yes<\/td>/);
    expect(revoke).toMatch(/<span class="status s2">204<\/span> Revoked\./);

    const list = section("op-get-api-tokens");
    expect(list).toMatch(/array of ApiToken/);
    expect(list).toMatch(
      /<code class="prop">lastUsedAt<\/code> <span class="type">string \(date-time\) \| null<\/span>/,
    );
  });

  it("allows its own stylesheet and nothing else", async () => {
    const response = await call("/api/docs");
    const csp = response.headers.get("content-security-policy") ?? "";
    expect(csp).toMatch(/^default-src 'none'; /);
    expect(csp).toMatch(/style-src 'sha256-[A-Za-z0-9+/]+=*'/);
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toMatch(/script-src|unsafe-inline/);
    expect(response.headers.get("x-frame-options")).toBe("DENY");
    // The hash is that of the page's <style> element.
    const html = await response.text();
    const style = /<style>([\s\S]*?)<\/style>/.exec(html)![1]!;
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(style)));
    expect(csp).toContain(`'sha256-${btoa(String.fromCharCode(...digest))}'`);
  });

  it("escapes whatever the document says", () => {
    const html = renderReference({
      openapi: "3.1.0",
      info: { title: "<T>", version: "1" },
      paths: {
        "/x/{id}": {
          get: {
            summary: '<img src=x onerror="alert(1)">',
            description: "Use `a<b>` here",
            responses: { "200": { description: "<b>ok</b>" } },
          },
        },
      },
    });
    expect(html).not.toContain("<img");
    expect(html).not.toContain("<b>ok</b>");
    expect(html).toContain("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;");
    expect(html).toContain("<code>a&lt;b&gt;</code>");
  });
});
