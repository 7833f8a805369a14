// Who is signed in. The app asks `/api/auth/me` once; any 401 from any call
// (an ended session, a revoked cookie) puts it back to "signed out", and the
// shell then shows the sign-in screen.
import {
  createContext,
  createResource,
  onCleanup,
  type ParentProps,
  type Resource,
  useContext,
} from "solid-js";
import { ApiError, api, call, type Ok, onUnauthenticated } from "./api/client.ts";

export type Me = Ok<Awaited<ReturnType<typeof api.api.auth.me.$get>>>;

interface SessionValue {
  me: Resource<Me | null>;
  signedIn: (me: Me | null) => void;
  refresh: () => Promise<unknown>;
  signOut: () => Promise<void>;
}

const SessionContext = createContext<SessionValue>();

async function fetchMe(): Promise<Me | null> {
  try {
    return await call(api.api.auth.me.$get());
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return null;
    throw err;
  }
}

export function SessionProvider(props: ParentProps) {
  const [me, { mutate, refetch }] = createResource(fetchMe);
  onCleanup(onUnauthenticated(() => mutate(null)));
  const value: SessionValue = {
    me,
    signedIn: (next) => mutate(next),
    refresh: async () => refetch(),
    async signOut() {
      try {
        await call(api.api.auth.logout.$post());
      } finally {
        mutate(null);
      }
    },
  };
  return <SessionContext.Provider value={value}>{props.children}</SessionContext.Provider>;
}

export function useSession(): SessionValue {
  const value = useContext(SessionContext);
  if (!value) throw new Error("useSession outside SessionProvider");
  return value;
}
