// Usage: CLIENT_AUTHORIZATION=… CLIENT_RECIPE_INPUT=… node ws.mjs <server URL>
// graphql-ws (the graphql-transport-ws protocol) with `ws` as its WebSocket, Node 20
// having none: the caller's Authorization travels in connection_init, as browsers must.
// Prints one JSON line per check: {"name", "status", "detail"}.
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import { check, configuration, deliversEvents, readsHistory, run, sinkClient } from "./common.mjs";

run(async () => {
  const config = configuration();
  const client = createClient({
    url: config.url.replace(/^http/, "ws"),
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: config.authorization },
    retryAttempts: 0,
  });
  try {
    const graphql = sinkClient(client);
    await check("graphql-ws query", () => readsHistory(graphql));
    await check("graphql-ws subscription", () => deliversEvents(graphql, config.input, "ws"));
  } finally {
    // Not awaited: against a server that stopped answering it would wait for ever, and
    // the script exits once its checks are done.
    client.dispose();
  }
});
