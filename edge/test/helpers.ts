// Requests against the app inside workerd, as a browser or script would send them.
import { env } from "cloudflare:workers";
import { app } from "../src/app.ts";

export async function call(path: string, init: RequestInit = {}): Promise<Response> {
  return app.request(path, init, env);
}

/** The web app's origin: a browser sends it as `Origin` on the app's own POST, PUT and DELETE requests. */
export const webOrigin = new URL(env.WEB_ORIGIN).origin;

/** Headers of a request the web app makes with the session cookie. */
export function fromWebApp(cookie: string, headers: Record<string, string> = {}): Record<string, string> {
  return { cookie, origin: webOrigin, ...headers };
}

/** Signs in through the dev sign-in and returns the session cookie header value. */
export async function signIn(
  email = `user-${crypto.randomUUID()}@example.com`,
): Promise<{ cookie: string; userId: string }> {
  const response = await call("/api/auth/dev", {
    method: "POST",
    headers: { "content-type": "application/json", origin: webOrigin },
    body: JSON.stringify({ email }),
  });
  if (response.status !== 200)
    throw new Error(`dev sign-in failed: ${response.status} ${await response.text()}`);
  const setCookie = response.headers.get("set-cookie") ?? "";
  const cookie = setCookie.split(";")[0]!;
  const { user } = (await response.json()) as { user: { id: string } };
  return { cookie, userId: user.id };
}
