import { Navigate, Route, Router, useSearchParams } from "@solidjs/router";
import { lazy } from "solid-js";
import { render } from "solid-js/web";
import { Shell } from "./App.tsx";
import { JobDetail } from "./pages/JobDetail.tsx";
import { Jobs } from "./pages/Jobs.tsx";
import { NotFound } from "./pages/NotFound.tsx";
import { SignIn } from "./pages/SignIn.tsx";
import { SessionProvider } from "./session.tsx";
import "./styles.css";

const NewJob = lazy(() => import("./pages/NewJob.tsx").then((m) => ({ default: m.NewJob })));
const Storage = lazy(() => import("./pages/Storage.tsx").then((m) => ({ default: m.Storage })));
const Tokens = lazy(() => import("./pages/Tokens.tsx").then((m) => ({ default: m.Tokens })));
const Operator = lazy(() => import("./pages/Operator.tsx").then((m) => ({ default: m.Operator })));
const Webhooks = lazy(() => import("./pages/Webhooks.tsx").then((m) => ({ default: m.Webhooks })));

/** "/" goes to the jobs, or to the sign-in screen when Google sign-in came back with an error. */
function Home() {
  const [params] = useSearchParams();
  const error = Array.isArray(params.signin_error) ? params.signin_error[0] : params.signin_error;
  return <Navigate href={error ? `/signin?signin_error=${encodeURIComponent(error)}` : "/jobs"} />;
}

const root = document.getElementById("root");
if (root) {
  render(
    () => (
      <SessionProvider>
        <Router root={Shell}>
          <Route path="/" component={Home} />
          <Route path="/signin" component={SignIn} />
          <Route path="/jobs" component={Jobs} />
          <Route path="/jobs/new" component={NewJob} />
          <Route path="/jobs/:id" component={JobDetail} />
          <Route path="/storage" component={Storage} />
          <Route path="/tokens" component={Tokens} />
          <Route path="/webhooks" component={Webhooks} />
          <Route path="/operator" component={Operator} />
          <Route path="*" component={NotFound} />
        </Router>
      </SessionProvider>
    ),
    root,
  );
}
