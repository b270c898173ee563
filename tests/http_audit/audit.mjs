// Usage: AUDIT_AUTHORIZATION='Bearer <token>' node audit.mjs <url>
// Prints one JSON line per audit: {"id", "name", "status", "reason"}.
import { auditServer } from "graphql-http";

const url = process.argv[2];
const authorization = process.env.AUDIT_AUTHORIZATION;
// Every audit request carries the credentials: the audits check the protocol, not auth.
function fetchFn(input, init = {}) {
  const headers = new Headers(init.headers);
  if (authorization) headers.set("authorization", authorization);
  return fetch(input, { ...init, headers });
}

const results = await auditServer({ url, fetchFn });
for (const result of results) {
  console.log(
    JSON.stringify({
      id: result.id,
      name: result.name,
      status: result.status,
      reason: result.status === "ok" ? null : result.reason,
    }),
  );
}
