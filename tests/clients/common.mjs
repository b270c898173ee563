// What the client scripts share: their configuration, the frontend's documents, the
// recipe scenarios, and checks that print one JSON line each and never hang.
//
// Configuration: argv[2] is the server's base URL (…/graphql is added); environment:
//   CLIENT_AUTHORIZATION  the Authorization header for every request (all organizations)
//   CLIENT_RECIPE_INPUT   a valid CreateProvisioningRecipeInput, as JSON
//   CLIENT_NARROW_AUTHORIZATION, CLIENT_OTHER_ORGANIZATION  (the "filtered" mode only)
//       a subscriber who sees only that other organization, and that organization's uid
import { readFileSync } from "node:fs";

/** An upper bound for one step (a request, an event), never a synchronisation. */
const WAIT_MS = 20_000;
/** An upper bound for a whole script, whatever its steps do. */
const SCRIPT_MS = 100_000;

export class ConfigurationError extends Error {}

function required(name) {
  const value = process.env[name];
  if (!value) throw new ConfigurationError(`${name} is not set`);
  return value;
}

export function configuration({ narrow = false } = {}) {
  const base = process.argv[2];
  if (!base) throw new ConfigurationError("usage: node <script> <server URL> [mode]");
  const config = {
    url: `${base.replace(/\/$/, "")}/graphql`,
    authorization: required("CLIENT_AUTHORIZATION"),
    input: JSON.parse(required("CLIENT_RECIPE_INPUT")),
  };
  if (narrow) {
    config.narrowAuthorization = required("CLIENT_NARROW_AUTHORIZATION");
    config.otherOrganization = required("CLIENT_OTHER_ORGANIZATION");
  }
  return config;
}

function document(name) {
  return readFileSync(new URL(`../queries/${name}.graphql`, import.meta.url), "utf8");
}

const CREATE = document("CreateRecipe");
export const LATEST = document("LatestEvents");
export const RECIPE_EVENTS = document("RecipeEvents");
export const RECIPE_CREATED = document("RecipeCreated");
/** A device the simulator always has, with a long history. */
export const SEED_DEVICE = { kind: "ESN", identifier: "09123456123" };

/** ``promise``, or a rejection that names ``what`` once ``ms`` have passed. */
export async function within(what, promise, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function describe(error) {
  if (error instanceof Error) {
    const cause = error.cause ? ` (cause: ${describe(error.cause)})` : "";
    return `${error.name}: ${error.message}${cause}`;
  }
  try {
    return JSON.stringify(error);
  } catch {
    return String(error);
  }
}

/** Runs one check: ``run`` returns the detail of a success and throws on a failure. */
export async function check(name, run) {
  let line;
  try {
    line = { name, status: "ok", detail: (await run()) ?? null };
  } catch (error) {
    line = { name, status: "failed", detail: describe(error) };
  }
  console.log(JSON.stringify(line));
}

/** Runs ``main``; exits 0 once it is done (open sockets or not), 2 on an error of the
 * script itself, 3 if it outlives its time box. */
export function run(main) {
  setTimeout(() => {
    console.error(`the script did not finish within ${SCRIPT_MS} ms`);
    process.exit(3);
  }, SCRIPT_MS).unref();
  main().then(
    () => process.exit(0),
    (error) => {
      console.error(error instanceof ConfigurationError ? error.message : error);
      process.exit(2);
    },
  );
}

export class Failure extends Error {
  name = "Failure";
}

/** The data of a GraphQL result, or a failure that quotes its errors. */
export function dataOf(result, what) {
  if (result?.errors?.length) {
    throw new Failure(`${what} answered errors: ${JSON.stringify(result.errors)}`);
  }
  if (!result?.data) throw new Failure(`${what} answered no data: ${JSON.stringify(result)}`);
  return result.data;
}

/**
 * Subscriptions as a pull queue over a push-style client: ``next()`` resolves with the
 * next result (or rejects with the stream's error, or a failure when it ended).
 */
export class Inbox {
  #results = [];
  #waiting = [];
  #ended = null;

  push(result) {
    const waiter = this.#waiting.shift();
    if (waiter) waiter.resolve(result);
    else this.#results.push(result);
  }

  end(error) {
    this.#ended ??= error ?? new Failure("the subscription ended");
    for (const waiter of this.#waiting.splice(0)) waiter.reject(this.#ended);
  }

  next(what = "subscription event") {
    if (this.#results.length) return Promise.resolve(this.#results.shift());
    if (this.#ended) return Promise.reject(this.#ended);
    return within(what, new Promise((resolve, reject) => this.#waiting.push({ resolve, reject })));
  }
}

/**
 * A client under test, as the scenarios use it:
 *   execute(query, variables) -> Promise<{data, errors}>   queries and mutations
 *   subscribe(query, variables) -> {inbox: Inbox, close(): Promise|void}
 * and ``recipes(client, input, label)``, which creates recipes with it, each with a serial
 * number of its own: ``create(name, changes)`` resolves with the mutation's payload.
 */
function recipes(client, input, label) {
  return async (name, changes = {}) => {
    const what = `mutation ${name}`;
    const variables = { input: { ...input, serialNumber: `SN-${label}-${name}`, ...changes } };
    const created = dataOf(await within(what, client.execute(CREATE, variables)), what)
      .createProvisioningRecipe;
    if (created.userErrors?.length) {
      throw new Failure(`${what} refused: ${JSON.stringify(created.userErrors)}`);
    }
    return created;
  };
}

async function nextEvent(subscription, field, what) {
  const result = await subscription.inbox.next(what);
  const event = dataOf(result, "the subscription")[field];
  if (!event) throw new Failure(`an event without ${field}: ${JSON.stringify(result)}`);
  return event;
}

function ended(subscription) {
  return within("end of the subscription", Promise.resolve(subscription.close()));
}

/** The latest two events of the seed device, read with ``client``. */
export async function readsHistory(client) {
  const result = await within("query result", client.execute(LATEST, { ...SEED_DEVICE, last: 2 }));
  const edges = dataOf(result, "LatestEvents").device.provisioningHistory.edges;
  if (edges.length !== 2) throw new Failure(`${edges.length} edges, not 2`);
  return { edges: edges.length, occurredAt: edges.map((e) => e.node.occurredAt) };
}

/**
 * A subscriber receives recipe events as the mutations create them. It subscribes after a
 * first event (``after``, so that no event is lost to the time the stream takes to open,
 * and none is a timing matter); the second event comes by replay or live, and the third,
 * created once the second has arrived, can only come live.
 */
export async function deliversEvents(client, input, label) {
  const create = recipes(client, input, label);
  const first = await create("first");
  const subscription = client.subscribe(RECIPE_EVENTS, { after: first.event.id });
  try {
    const created = [];
    const received = [];
    for (const name of ["second", "third"]) {
      created.push((await create(name)).event);
      received.push(await nextEvent(subscription, "provisioningRecipeEvents", `${name} event`));
      const [got, expected] = [received.at(-1).id, created.at(-1).id];
      if (got !== expected) throw new Failure(`received event ${got}, expected ${expected}`);
    }
    return { created, received };
  } finally {
    await ended(subscription);
  }
}

/**
 * A subscriber whose token sees only another organization gets that organization's event
 * and not the one created before it for ours: the first event it receives is theirs.
 */
export async function filtersOrganizations(client, subscriber, input, otherOrganization, label) {
  const create = recipes(client, input, label);
  const start = await create("start");
  const subscription = subscriber.subscribe(RECIPE_CREATED, { after: start.event.id });
  try {
    const ours = (await create("ours")).event.id;
    const theirs = (await create("theirs", { organizationUid: otherOrganization })).event.id;
    const received = (await nextEvent(subscription, "provisioningRecipeCreated", "their event")).id;
    if (received !== theirs) {
      throw new Failure(`received event ${received}; ours was ${ours}, theirs ${theirs}`);
    }
    return { ours, theirs, received };
  } finally {
    await ended(subscription);
  }
}

/**
 * A client of the sink style (graphql-ws and graphql-sse: ``subscribe(payload, sink)``
 * returns a function that ends the operation) as the scenarios use it.
 */
export function sinkClient(client) {
  return {
    execute: (query, variables) =>
      new Promise((resolve, reject) => {
        let last;
        client.subscribe(
          { query, variables },
          { next: (result) => (last = result), error: reject, complete: () => resolve(last) },
        );
      }),
    subscribe(query, variables) {
      const inbox = new Inbox();
      const stop = client.subscribe(
        { query, variables },
        {
          next: (result) => inbox.push(result),
          error: (error) => inbox.end(error),
          complete: () => inbox.end(),
        },
      );
      return { inbox, close: stop };
    },
  };
}
