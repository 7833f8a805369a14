import { A } from "@solidjs/router";

export function NotFound() {
  return (
    <section>
      <h1>Page not found</h1>
      <p>There is nothing at this address.</p>
      <p>
        <A href="/jobs">Go to your jobs</A>
      </p>
    </section>
  );
}
