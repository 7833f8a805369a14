// The shell around every screen: the sign-in gate, the header with navigation,
// and focus moved to each new screen's heading so keyboard and screen-reader
// users land where the content starts.
import { A, Navigate, type RouteSectionProps, useLocation, useNavigate } from "@solidjs/router";
import { createEffect, createSignal, Match, on, Show, Switch } from "solid-js";
import { describeError } from "./api/client.ts";
import { useSession } from "./session.tsx";

const navItems = [
  { href: "/jobs", label: "Jobs", end: true },
  { href: "/jobs/new", label: "New job", end: true },
  { href: "/storage", label: "Storage", end: false },
  { href: "/tokens", label: "API tokens", end: false },
  { href: "/webhooks", label: "Webhooks", end: false },
] as const;

/** The sign-in screen, remembering where the visitor was going (and any sign-in error to show). */
function signInHref(pathname: string, search: string): string {
  const query = new URLSearchParams(search);
  const error = query.get("signin_error");
  query.delete("signin_error");
  const rest = query.toString();
  const next = pathname === "/" && rest === "" ? "/jobs" : `${pathname}${rest ? `?${rest}` : ""}`;
  const target = new URLSearchParams({ next });
  if (error) target.set("signin_error", error);
  return `/signin?${target.toString()}`;
}

export function Shell(props: RouteSectionProps) {
  const session = useSession();
  const location = useLocation();
  const onSignIn = () => location.pathname === "/signin";

  // After navigation (not on first load), focus the new screen's heading.
  createEffect(
    on(
      () => location.pathname,
      () => {
        requestAnimationFrame(() => {
          const heading = document.querySelector<HTMLElement>("main h1");
          if (heading) {
            if (!heading.hasAttribute("tabindex")) heading.setAttribute("tabindex", "-1");
            heading.focus({ preventScroll: false });
          }
        });
      },
      { defer: true },
    ),
  );

  return (
    <Switch>
      <Match when={session.me.error}>
        <main class="page narrow">
          <h1>TorreClou</h1>
          <div class="alert error" role="alert">
            <p>Cannot load your account: {describeError(session.me.error)}</p>
            <button type="button" class="button" onClick={() => session.refresh()}>
              Try again
            </button>
          </div>
        </main>
      </Match>
      <Match when={session.me.loading && session.me() === undefined}>
        <main class="page narrow splash" aria-busy="true">
          <p role="status">Loading…</p>
        </main>
      </Match>
      <Match when={onSignIn()}>{props.children}</Match>
      <Match when={session.me() === null}>
        <Navigate href={signInHref(location.pathname, location.search)} />
      </Match>
      <Match when={session.me()}>
        {(me) => (
          <SignedIn email={me().user.email} name={me().user.name} operator={me().operator}>
            {props.children}
          </SignedIn>
        )}
      </Match>
    </Switch>
  );
}

function SignedIn(props: {
  email: string;
  name: string | null;
  /** The edge's OPERATOR_EMAILS name this account: the Operator page is linked. */
  operator: boolean;
  children: RouteSectionProps["children"];
}) {
  const session = useSession();
  const navigate = useNavigate();
  const [signingOut, setSigningOut] = createSignal(false);
  const signOut = async () => {
    setSigningOut(true);
    try {
      await session.signOut();
    } catch {
      // Signed out locally either way.
    } finally {
      setSigningOut(false);
      navigate("/signin", { replace: true });
    }
  };
  return (
    <>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <div class="topbar-inner">
          <A href="/jobs" class="brand" aria-label="TorreClou, jobs">
            <span class="brand-mark" aria-hidden="true">
              ⤓
            </span>
            TorreClou
          </A>
          <nav aria-label="Main" class="mainnav">
            <ul>
              {navItems.map((item) => (
                <li>
                  <A href={item.href} end={item.end} activeClass="active">
                    {item.label}
                  </A>
                </li>
              ))}
              <Show when={props.operator}>
                <li>
                  <A href="/operator" activeClass="active">
                    Operator
                  </A>
                </li>
              </Show>
            </ul>
          </nav>
          <div class="account">
            <span class="account-name" title={props.email}>
              {props.name || props.email}
            </span>
            <button type="button" class="button subtle small" onClick={signOut} disabled={signingOut()}>
              Sign out
            </button>
          </div>
        </div>
      </header>
      <main id="main" class="page">
        {props.children}
      </main>
    </>
  );
}

/** Redirects a signed-in visitor away from the sign-in screen. */
export function RedirectIfSignedIn(props: { to: string }) {
  const session = useSession();
  return (
    <Show when={session.me()}>
      <Navigate href={props.to} />
    </Show>
  );
}
