// Usage: CLIENT_AUTHORIZATION=… CLIENT_RECIPE_INPUT=… node apollo.mjs <server URL> <mode>
// Apollo Client 4 over HTTP only, as a frontend without WebSockets uses it. Modes:
//   subscription  a query, and a subscription over HTTP multipart (HttpLink sends
//                 subscriptions with `Accept: multipart/mixed;…subscriptionSpec=1.0`)
//   filtered      a multipart subscriber that sees only another organization
//                 (CLIENT_NARROW_AUTHORIZATION, CLIENT_OTHER_ORGANIZATION)
//   apq           automatic persisted queries with PersistedQueryLink
// Prints one JSON line per check: {"name", "status", "detail"}.
import { createHash } from "node:crypto";
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import {
  ConfigurationError,
  Failure,
  Inbox,
  LATEST,
  SEED_DEVICE,
  check,
  configuration,
  dataOf,
  deliversEvents,
  filtersOrganizations,
  readsHistory,
  run,
  within,
} from "./common.mjs";

/** Every request Apollo sends, as the server received it: method and JSON body. */
class Recorder {
  requests = [];

  fetch = (input, init = {}) => {
    const body = init.body ? JSON.parse(init.body) : null;
    this.requests.push({ method: init.method ?? "GET", url: String(input), body });
    return fetch(input, init);
  };

  /** Requests whose body (or, for GET, URL) carried the document itself. */
  get withDocument() {
    return this.requests.filter(carriesDocument).length;
  }
}

function carriesDocument(request) {
  return request.body
    ? typeof request.body.query === "string"
    : new URL(request.url).searchParams.has("query");
}

function persistedHash(request) {
  const extensions = request.body
    ? request.body.extensions
    : JSON.parse(new URL(request.url).searchParams.get("extensions") ?? "null");
  return extensions?.persistedQuery?.sha256Hash ?? null;
}

function apollo(url, authorization, links = [], recorder = new Recorder()) {
  const http = new HttpLink({ uri: url, headers: { authorization }, fetch: recorder.fetch });
  return new ApolloClient({ link: ApolloLink.from([...links, http]), cache: new InMemoryCache() });
}

/** An Apollo client as the scenarios in common.mjs use one. */
function scenarioClient(client) {
  const asResult = ({ data, error }) => (error ? { data, errors: [String(error)] } : { data });
  return {
    async execute(query, variables) {
      const document = gql(query);
      const isMutation = document.definitions.some((d) => d.operation === "mutation");
      const options = { variables, errorPolicy: "all", fetchPolicy: "no-cache" };
      return asResult(
        isMutation
          ? await client.mutate({ mutation: document, ...options })
          : await client.query({ query: document, ...options }),
      );
    },
    subscribe(query, variables) {
      const inbox = new Inbox();
      const subscription = client
        .subscribe({ query: gql(query), variables, fetchPolicy: "no-cache" })
        .subscribe({
          next: (result) => (result.error ? inbox.end(result.error) : inbox.push(asResult(result))),
          error: (error) => inbox.end(error),
          complete: () => inbox.end(),
        });
      return { inbox, close: () => subscription.unsubscribe() };
    },
  };
}

async function subscriptions(config) {
  const client = scenarioClient(apollo(config.url, config.authorization));
  await check("apollo query", () => readsHistory(client));
  await check("apollo multipart subscription", () =>
    deliversEvents(client, config.input, "apollo"),
  );
}

async function filtered(config) {
  const client = scenarioClient(apollo(config.url, config.authorization));
  const subscriber = scenarioClient(apollo(config.url, config.narrowAuthorization));
  await check("apollo multipart subscription sees only its organizations", () =>
    filtersOrganizations(client, subscriber, config.input, config.otherOrganization, "apollo"),
  );
}

const sha256 = (text) => createHash("sha256").update(text).digest("hex");

/** A new client (its own cache and hashes) reads the seed device with APQ on. */
async function persistedRead(config, useGETForHashedQueries = false) {
  const recorder = new Recorder();
  const link = new PersistedQueryLink({ sha256, useGETForHashedQueries });
  const client = apollo(config.url, config.authorization, [link], recorder);
  const result = await within(
    "persisted query result",
    client.query({
      query: gql(LATEST),
      variables: { ...SEED_DEVICE, last: 2 },
      fetchPolicy: "no-cache",
      errorPolicy: "all",
    }),
  );
  if (result.error) throw new Failure(`the query failed: ${result.error}`);
  const edges = dataOf(result, "LatestEvents").device.provisioningHistory.edges.length;
  const requests = recorder.requests.map((r) => ({
    method: r.method,
    hash: persistedHash(r),
    document: carriesDocument(r),
  }));
  return { edges, requests, withDocument: recorder.withDocument };
}

async function persistedQueries(config) {
  // The first client's hash is unknown: the server says PersistedQueryNotFound, and
  // the link sends the document with the hash, which registers it.
  await check("apollo persisted query registers", async () => {
    const read = await persistedRead(config);
    const [first, second] = read.requests;
    const registers = second?.document && second.hash === first.hash;
    if (read.requests.length !== 2 || first.document || !registers) {
      throw new Failure(`expected hash only, then the document: ${JSON.stringify(read)}`);
    }
    return read;
  });
  // A second client knows only the hash, which the server now has.
  await check("apollo persisted query by hash", async () => {
    const read = await persistedRead(config);
    if (read.requests.length !== 1 || read.withDocument !== 0) {
      throw new Failure(`expected one request, hash only: ${JSON.stringify(read)}`);
    }
    return read;
  });
  // The same over GET, which caches and CDNs can keep: the hash in the URL's extensions.
  await check("apollo persisted query by hash over GET", async () => {
    const read = await persistedRead(config, true);
    const [only] = read.requests;
    if (read.requests.length !== 1 || only.method !== "GET" || read.withDocument !== 0) {
      throw new Failure(`expected one GET, hash only: ${JSON.stringify(read)}`);
    }
    return read;
  });
}

const MODES = { subscription: subscriptions, filtered, apq: persistedQueries };

run(async () => {
  const mode = MODES[process.argv[3]];
  if (!mode) throw new ConfigurationError(`mode: one of ${Object.keys(MODES).join(", ")}`);
  await mode(configuration({ narrow: mode === filtered }));
});
