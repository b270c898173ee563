// Usage: CLIENT_AUTHORIZATION=… CLIENT_RECIPE_INPUT=… node sse.mjs <server URL> <connection> <mode>
// graphql-sse's client, GraphQL over Server-Sent Events, in either of its connection modes:
//   distinct  one event stream per operation (the default)
//   single    one stream for all operations (`singleConnection: true`): PUT for a
//             reservation token, the stream and operations under X-GraphQL-Event-Stream-Token
// and modes:
//   subscription  a query, and a subscription that receives recipe events
//   filtered      a subscriber that sees only another organization
//                 (CLIENT_NARROW_AUTHORIZATION, CLIENT_OTHER_ORGANIZATION)
// Prints one JSON line per check: {"name", "status", "detail"}.
import { createClient } from "graphql-sse";
import {
  ConfigurationError,
  check,
  configuration,
  deliversEvents,
  filtersOrganizations,
  readsHistory,
  run,
  sinkClient,
} from "./common.mjs";

const CONNECTIONS = { distinct: false, single: true };
const MODES = ["subscription", "filtered"];

run(async () => {
  const [connection, mode] = process.argv.slice(3);
  if (!(connection in CONNECTIONS) || !MODES.includes(mode)) {
    const choices = `one of ${Object.keys(CONNECTIONS)}, then one of ${MODES}`;
    throw new ConfigurationError(`<connection> <mode>: ${choices}`);
  }
  const config = configuration({ narrow: mode === "filtered" });
  const label = `sse-${connection}`;
  const clients = [];
  const sse = (authorization) => {
    const client = createClient({
      url: config.url,
      headers: { Authorization: authorization },
      singleConnection: CONNECTIONS[connection],
      retryAttempts: 0,
    });
    clients.push(client);
    return sinkClient(client);
  };
  try {
    const client = sse(config.authorization);
    if (mode === "subscription") {
      await check(`graphql-sse ${connection} query`, () => readsHistory(client));
      await check(`graphql-sse ${connection} subscription`, () =>
        deliversEvents(client, config.input, label),
      );
    } else {
      const subscriber = sse(config.narrowAuthorization);
      await check(`graphql-sse ${connection} subscription sees only its organizations`, () =>
        filtersOrganizations(client, subscriber, config.input, config.otherOrganization, label),
      );
    }
  } finally {
    for (const client of clients) client.dispose();
  }
});
