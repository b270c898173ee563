// The reporting dashboard: the service's public GraphQL API drawn. Queries and mutations
// go over HTTP, subscriptions over graphql-transport-ws (graphql-ws's client); every
// document is the page's (tests/queries/Dashboard*, from the trusted documents manifest),
// never written here.

const DOCUMENTS = JSON.parse(document.getElementById("documents").textContent);
const PREFILLED = JSON.parse(document.getElementById("authorization").textContent);
const STORED = "provgraph.dashboard.authorization";
const TIMELINE_PAGE = 25;
const TABLE_ROWS = 1000;
const CHART_SERIES = 12;
const FEED_LENGTH = 200;
const RECENT_EVENTS = 50;
const PALETTE = [
  "#1f5fbf", "#e07b00", "#2a9d4b", "#c0392b", "#7b4fb8", "#8c6d31",
  "#d35ea8", "#5a6272", "#a3a300", "#1aa3b8", "#f2a7a7", "#9ecae1", "#b0b0b0",
];
const DIMENSIONS = {
  EVENT_TYPE: { label: "Event type", value: (key) => key.eventType },
  STATUS: { label: "Status", value: (key) => key.status },
  EVENT_BY: { label: "Event by", value: (key) => key.eventBy ?? "(none)" },
  SERVICE_PLAN: { label: "Service plan", value: (key) => key.servicePlan ?? "(none)" },
  DEVICE: {
    label: "Device",
    value: (key) => `${key.device.kind}:${key.device.identifier}`,
  },
};
const FINAL_STATES = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);

let authorization = PREFILLED ?? sessionStorage.getItem(STORED);

// --- Errors: each says what happened and what to do -------------------------------------

class ApiError extends Error {
  constructor(title, detail, code) {
    super(`${title} ${detail}`.trim());
    this.title = title;
    this.detail = detail;
    this.code = code;
  }
}

function describe(error) {
  const code = error.extensions?.code ?? "";
  const message = error.message ?? "";
  if (code === "UNAUTHENTICATED") {
    if (/expired/i.test(message)) {
      return new ApiError(
        "Your token has expired.",
        "Paste a new token above (“API token”) and try again.",
        code,
      );
    }
    if (!authorization) {
      return new ApiError("This service needs a token.", "Paste one above (“API token”).", code);
    }
    return new ApiError(
      "The service refused the token.",
      `${message} Paste a valid token above.`,
      code,
    );
  }
  if (code === "FORBIDDEN") {
    return new ApiError("Your token has no permission for this.", message, code);
  }
  if (code.startsWith("UPSTREAM_")) {
    return new ApiError(
      "The upstream provisioning service (UWS) could not answer.",
      `${message} Nothing is wrong with your request: try again later.`,
      code,
    );
  }
  if (code === "REPORT_TOO_LARGE") {
    return new ApiError(
      "Too many devices for a report in one request.",
      `${message} Use “Run as a job”.`,
      code,
    );
  }
  if (code === "RATE_LIMITED") {
    return new ApiError("Too many requests.", `${message} Wait a moment and try again.`, code);
  }
  if (code === "DEADLINE_EXCEEDED") {
    return new ApiError(
      "The request took too long.",
      `${message} A report job has no such limit.`,
      code,
    );
  }
  if (code === "BAD_USER_INPUT") {
    return new ApiError("The service could not use this input.", message, code);
  }
  return new ApiError("The service answered with an error.", message, code);
}

/** ``extensions.warnings``: the answer stands, with a caveat (stale data, a gap). */
function caveat(warnings) {
  return new ApiError(
    "The answer stands, with a caveat:",
    warnings.map((warning) => warning.message).join(" "),
    warnings[0].code,
  );
}

function unreachable() {
  return new ApiError(
    "The service could not be reached.",
    "Check that it is running and that this page's address is right.",
    null,
  );
}

function show(region, error, kind = "error") {
  region.replaceChildren();
  region.className = `notice ${kind}`;
  if (error instanceof ApiError) {
    region.append(element("strong", {}, error.title), element("span", {}, error.detail));
    if (error.code) {
      // The code is what support and the API's documentation go by.
      region.append(" ", element("code", { class: "muted" }, error.code));
    }
  } else {
    region.append(element("span", {}, String(error.message ?? error)));
  }
  region.hidden = false;
}

function hide(region) {
  region.hidden = true;
  region.replaceChildren();
}

// --- GraphQL over HTTP and WebSocket ------------------------------------------------------

function headers(extra = {}) {
  return authorization ? { ...extra, authorization } : extra;
}

async function graphql(name, variables) {
  let response;
  try {
    response = await fetch("/graphql", {
      method: "POST",
      headers: headers({
        "content-type": "application/json",
        accept: "application/graphql-response+json, application/json",
      }),
      body: JSON.stringify({ query: DOCUMENTS[name], variables, operationName: name }),
    });
  } catch {
    throw unreachable();
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(
      "The service answered oddly.",
      `HTTP ${response.status}, not GraphQL.`,
      "HTTP_ERROR",
    );
  }
  if (body.errors?.length) {
    throw describe(body.errors[0]);
  }
  return { data: body.data, extensions: body.extensions ?? {} };
}

let socketClient = null;

function subscriptions() {
  if (socketClient === null) {
    const url = new URL("/graphql", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    socketClient = graphqlWs.createClient({
      url: url.toString(),
      // The token travels in connection_init, as GraphiQL sends it.
      connectionParams: () => (authorization ? { Authorization: authorization } : {}),
      lazy: true,
      // Reconnecting is ours: the live feed resumes after the last event it showed.
      retryAttempts: 0,
      on: { connected: () => document.dispatchEvent(new Event("socket-connected")) },
    });
  }
  return socketClient;
}

function closeReason(event) {
  if (event?.code === 4403 || event?.code === 4401) {
    const reason = event.reason && event.reason !== "Forbidden" ? ` (${event.reason})` : "";
    return describe({
      message: `The service closed the connection${reason}.`,
      extensions: { code: "UNAUTHENTICATED" },
    });
  }
  if (Array.isArray(event) && event.length) {
    return describe(event[0]);
  }
  return null;
}

function subscribe(name, variables, sink) {
  return subscriptions().subscribe(
    { query: DOCUMENTS[name], variables, operationName: name },
    {
      next(message) {
        if (message.errors?.length) {
          sink.error(describe(message.errors[0]), false);
        } else {
          sink.next(message.data);
        }
      },
      error(event) {
        const known = closeReason(event);
        sink.error(known ?? unreachable(), known === null);
      },
      complete: sink.complete,
    },
  );
}

// --- Small helpers ------------------------------------------------------------------------

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== false) {
      node.setAttribute(name, value === true ? "" : value);
    }
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

const number = new Intl.NumberFormat("en");

function when(instant, zone) {
  const date = new Date(instant);
  return new Intl.DateTimeFormat("en-CA", {
    timeZone: zone,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  }).format(date).replace(",", "");
}

function bucketLabel(instant, bucket, zone) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-CA", {
      timeZone: zone,
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      hour12: false,
    })
      .formatToParts(new Date(instant))
      .map((part) => [part.type, part.value]),
  );
  const day = `${parts.year}-${parts.month}-${parts.day}`;
  return {
    MONTH: `${parts.year}-${parts.month}`,
    WEEK: `week of ${day}`,
    DAY: day,
    HOUR: `${day} ${parts.hour}:00`,
  }[bucket];
}

/** The offset of ``zone`` at the wall time ``date``T``time``, as ``+01:00``. */
function offsetAt(date, time, zone) {
  const offsetOf = (epoch) => {
    const name = new Intl.DateTimeFormat("en-US", { timeZone: zone, timeZoneName: "longOffset" })
      .formatToParts(new Date(epoch))
      .find((part) => part.type === "timeZoneName").value;
    const match = /GMT([+-]\d{2}):?(\d{2})?/.exec(name);
    return match ? `${match[1]}:${match[2] ?? "00"}` : "+00:00";
  };
  const minutes = (offset) =>
    (offset[0] === "-" ? -1 : 1) * (Number(offset.slice(1, 3)) * 60 + Number(offset.slice(4)));
  const wall = Date.parse(`${date}T${time}Z`);
  let offset = offsetOf(wall);
  offset = offsetOf(wall - minutes(offset) * 60000);
  return offset;
}

function localDay(offsetDays = 0) {
  const day = new Date(Date.now() + offsetDays * 86400000);
  return day.toISOString().slice(0, 10);
}

// --- Tabs (the WAI-ARIA tabs pattern: arrows, Home and End move between them) ---------------

const tabs = [...document.querySelectorAll('[role="tab"]')];
const opened = new Set();

function select(tab, focus = false) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
  }
  if (focus) {
    tab.focus();
  }
  const panel = tab.dataset.panel;
  if (window.location.hash !== `#${panel}`) {
    history.replaceState(null, "", `#${panel}`);
  }
  if (!opened.has(panel)) {
    opened.add(panel);
    ON_OPEN[panel]?.();
  }
}

for (const tab of tabs) {
  tab.addEventListener("click", () => select(tab));
  tab.addEventListener("keydown", (event) => {
    const index = tabs.indexOf(tab);
    const next = {
      ArrowRight: tabs[(index + 1) % tabs.length],
      ArrowLeft: tabs[(index - 1 + tabs.length) % tabs.length],
      Home: tabs[0],
      End: tabs[tabs.length - 1],
    }[event.key];
    if (next) {
      event.preventDefault();
      select(next, true);
    }
  });
}

// --- The token ---------------------------------------------------------------------------

const tokenForm = document.getElementById("token-form");
const tokenInput = document.getElementById("token");
const tokenState = document.getElementById("token-state");

function describeToken() {
  if (authorization && authorization === PREFILLED) {
    tokenState.textContent = "Using the development token (this host only).";
  } else if (authorization) {
    tokenState.textContent = "Using the token you entered.";
  } else {
    tokenState.textContent = "No token: paste one to see data.";
  }
}

tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const value = tokenInput.value.trim().replace(/^bearer\s+/i, "");
  authorization = value ? `Bearer ${value}` : PREFILLED;
  if (value) {
    sessionStorage.setItem(STORED, authorization);
  } else {
    sessionStorage.removeItem(STORED);
  }
  tokenInput.value = "";
  describeToken();
  // A new credential needs a new socket: connection_init is where it is checked.
  socketClient?.dispose();
  socketClient = null;
  if (opened.has("live")) {
    live.restart();
  }
});

// --- Fleet report ------------------------------------------------------------------------

const reportForm = document.getElementById("report-form");
const reportMessage = document.getElementById("report-message");
const reportBusy = document.getElementById("report-busy");
const reportResult = document.getElementById("report-result");
const csvButton = document.getElementById("download-csv");
let chart = null;
let lastCsv = null;

function fillReportForm() {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  document.getElementById("report-zone").value = zone;
  document.getElementById("zones").append(
    ...Intl.supportedValuesOf("timeZone").map((name) => element("option", { value: name })),
  );
  document.getElementById("report-from").value = localDay(-365);
  document.getElementById("report-to").value = localDay();
  document.getElementById("report-bucket").value = "MONTH";
  const [first, second] = document.querySelectorAll("select.dimension");
  for (const [name, dimension] of Object.entries(DIMENSIONS)) {
    first.append(element("option", { value: name }, dimension.label));
  }
  second.append(element("option", { value: "" }, "Nothing else"));
  for (const [name, dimension] of Object.entries(DIMENSIONS)) {
    second.append(element("option", { value: name }, dimension.label));
  }
  first.value = "EVENT_TYPE";
  second.value = "";
  for (const radio of reportForm.elements.scope) {
    radio.addEventListener("change", () => {
      const list = reportForm.elements.scope.value === "list";
      document.getElementById("report-devices").disabled = !list;
      document.getElementById("report-account").disabled = list;
    });
  }
}

/** The form as the API's ProvisioningReportInput, and the CSV route's parameters. */
function reportRequest() {
  const form = reportForm.elements;
  const zone = form.timeZone.value.trim() || "UTC";
  try {
    new Intl.DateTimeFormat("en", { timeZone: zone });
  } catch {
    throw new ApiError(
      "Unknown time zone.",
      `“${zone}” is not an IANA time zone, e.g. Europe/Berlin.`,
      null,
    );
  }
  if (!form.from.value || !form.to.value) {
    throw new ApiError(
      "The range needs both dates.",
      "Choose a first and a last day.",
      null,
    );
  }
  const groupBy = [form.dimension1.value];
  if (form.dimension2.value && form.dimension2.value !== form.dimension1.value) {
    groupBy.push(form.dimension2.value);
  }
  const input = {
    occurredAfter: `${form.from.value}T00:00:00${offsetAt(form.from.value, "00:00:00", zone)}`,
    occurredBefore: `${form.to.value}T23:59:59.9999999${offsetAt(form.to.value, "23:59:59", zone)}`,
    groupBy,
    bucket: form.bucket.value || null,
    timeZone: zone,
  };
  const params = new URLSearchParams();
  if (form.status.value) {
    input.filter = { statuses: [form.status.value] };
    params.append("statuses", form.status.value);
  }
  if (form.scope.value === "list") {
    const lines = form.devices.value.split(/\n/).map((line) => line.trim()).filter(Boolean);
    if (!lines.length) {
      throw new ApiError(
        "No devices listed.",
        "Write one KIND:identifier a line, or choose the whole account.",
        null,
      );
    }
    input.devices = lines.map((line) => {
      const [kind, ...rest] = line.split(":");
      return { kind: kind.trim().toUpperCase(), identifier: rest.join(":").trim() };
    });
    for (const device of input.devices) {
      params.append("devices", `${device.kind}:${device.identifier}`);
    }
  } else if (form.accountName.value.trim()) {
    input.deviceFilter = { accountName: form.accountName.value.trim() };
    params.append("accountName", input.deviceFilter.accountName);
  }
  for (const name of ["occurredAfter", "occurredBefore", "timeZone"]) {
    params.append(name, input[name]);
  }
  if (input.bucket) {
    params.append("bucket", input.bucket);
  }
  for (const dimension of groupBy) {
    params.append("groupBy", dimension);
  }
  return { input, params };
}

function busy(button, text) {
  const label = button.textContent;
  button.disabled = true;
  button.textContent = text;
  return () => {
    button.disabled = false;
    button.textContent = label;
  };
}

reportForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  hide(reportMessage);
  let request;
  try {
    request = reportRequest();
  } catch (error) {
    show(reportMessage, error);
    return;
  }
  const done = busy(document.getElementById("run-report"), "Running…");
  reportBusy.textContent = "Reading the devices' histories…";
  try {
    const { data, extensions } = await graphql("DashboardReport", { input: request.input });
    lastCsv = request.params;
    drawReport(data.provisioningReport, request.input, extensions.cost, extensions.warnings);
  } catch (error) {
    reportResult.hidden = true;
    hide(document.getElementById("report-warnings"));
    show(reportMessage, error);
  } finally {
    reportBusy.textContent = "";
    done();
  }
});

function seriesOf(report, input) {
  const first = DIMENSIONS[input.groupBy[0]];
  const labels = input.bucket
    ? [...new Set(report.rows.map((row) => row.key.bucketStart))].sort()
    : ["all"];
  const index = new Map(labels.map((label, position) => [label, position]));
  const totals = new Map();
  for (const row of report.rows) {
    const name = first.value(row.key);
    totals.set(name, (totals.get(name) ?? 0) + row.count);
  }
  // The largest series each get a colour; the rest are added up as "Other".
  const ranked = [...totals.entries()].sort((a, b) => b[1] - a[1]).map(([name]) => name);
  const kept = ranked.length > CHART_SERIES ? CHART_SERIES - 1 : CHART_SERIES;
  const shown = new Set(ranked.slice(0, kept));
  const series = new Map();
  for (const row of report.rows) {
    const name = shown.has(first.value(row.key)) ? first.value(row.key) : "Other";
    if (!series.has(name)) {
      series.set(name, new Array(labels.length).fill(0));
    }
    series.get(name)[index.get(input.bucket ? row.key.bucketStart : "all")] += row.count;
  }
  const names = [...series.keys()].sort((a, b) =>
    a === "Other" ? 1 : b === "Other" ? -1 : ranked.indexOf(a) - ranked.indexOf(b),
  );
  return {
    labels: input.bucket
      ? labels.map((label) => bucketLabel(label, input.bucket, input.timeZone))
      : ["Whole range"],
    datasets: names.map((name, position) => ({
      label: name,
      data: series.get(name),
      backgroundColor: PALETTE[position % PALETTE.length],
      stack: "events",
    })),
  };
}

function drawReport(report, input, cost, warnings) {
  reportResult.hidden = false;
  const summary = document.getElementById("report-summary");
  const facts = [
    ["Events", report.totalEvents],
    ["Devices read", report.devicesScanned],
    ["Devices failed", report.failures.length],
    ["Upstream calls", cost?.upstreamCalls ?? "–"],
    ["Cache hits", cost?.cacheHits ?? "–"],
  ];
  summary.replaceChildren(
    ...facts.map(([term, value]) =>
      element(
        "div",
        { "data-fact": term },
        element("dt", {}, term),
        element("dd", {}, typeof value === "number" ? number.format(value) : value),
      ),
    ),
  );
  csvButton.disabled = false;
  const warned = document.getElementById("report-warnings");
  hide(warned);
  if (warnings?.length) {
    show(warned, caveat(warnings), "info");
  }

  const canvas = document.getElementById("report-chart");
  const caption = document.getElementById("report-chart-caption");
  chart?.destroy();
  chart = null;
  const firstLabel = DIMENSIONS[input.groupBy[0]].label.toLowerCase();
  if (!report.rows.length) {
    canvas.hidden = true;
    caption.textContent = "";
    show(
      reportMessage,
      {
        message:
          report.failures.length && !report.devicesScanned
            ? "No device of this report could be read: see the failures below."
            : "No events in this range: choose a wider range or other devices.",
      },
      "info",
    );
  } else {
    canvas.hidden = false;
    const data = seriesOf(report, input);
    const per = input.bucket
      ? `per ${input.bucket.toLowerCase()} (${input.timeZone})`
      : "over the whole range";
    canvas.setAttribute(
      "aria-label",
      `Stacked bar chart of ${number.format(report.totalEvents)} events ${per}, ` +
        `by ${firstLabel}. The table below has the same numbers.`,
    );
    caption.textContent = `Events ${per}, stacked by ${firstLabel}.`;
    chart = new Chart(canvas, {
      type: "bar",
      data,
      options: {
        animation: false,
        maintainAspectRatio: false,
        responsive: true,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true },
          y: { stacked: true, beginAtZero: true, title: { display: true, text: "events" } },
        },
        plugins: { legend: { position: "right" } },
      },
    });
  }
  drawTable(report, input);
  drawFailures(report.failures);
}

let sortState = { column: null, descending: true };

function drawTable(report, input) {
  const table = document.getElementById("report-table");
  const columns = input.groupBy.map((name) => ({
    label: DIMENSIONS[name].label,
    value: (row) => DIMENSIONS[name].value(row.key),
  }));
  if (input.bucket) {
    columns.push({
      label: "Bucket",
      value: (row) => row.key.bucketStart,
      show: (value) => bucketLabel(value, input.bucket, input.timeZone),
    });
  }
  columns.push(
    { label: "Count", value: (row) => row.count, numeric: true },
    {
      label: "First",
      value: (row) => row.firstOccurredAt,
      show: (value) => when(value, input.timeZone),
    },
    {
      label: "Last",
      value: (row) => row.lastOccurredAt,
      show: (value) => when(value, input.timeZone),
    },
  );
  if (sortState.column === null || sortState.column >= columns.length) {
    sortState = { column: columns.findIndex((column) => column.label === "Count"), descending: true };
  }

  const render = () => {
    const column = columns[sortState.column];
    const rows = [...report.rows].sort((a, b) => {
      const [x, y] = [column.value(a), column.value(b)];
      const order = column.numeric ? x - y : String(x).localeCompare(String(y));
      return sortState.descending ? -order : order;
    });
    const head = element(
      "tr",
      {},
      ...columns.map((column, position) => {
        const sorted = position === sortState.column;
        const button = element(
          "button",
          { type: "button" },
          column.label,
          sorted ? (sortState.descending ? " ▼" : " ▲") : "",
        );
        button.addEventListener("click", () => {
          sortState = {
            column: position,
            descending: sorted ? !sortState.descending : Boolean(column.numeric),
          };
          render();
          table.querySelectorAll("th button")[position].focus();
        });
        return element(
          "th",
          {
            scope: "col",
            class: column.numeric ? "number" : null,
            "aria-sort": sorted ? (sortState.descending ? "descending" : "ascending") : "none",
          },
          button,
        );
      }),
    );
    const body = rows.slice(0, TABLE_ROWS).map((row) =>
      element(
        "tr",
        {},
        ...columns.map((column) => {
          const value = column.value(row);
          const text = column.show ? column.show(value) : column.numeric ? number.format(value) : value;
          return element("td", { class: column.numeric ? "number" : null }, text);
        }),
      ),
    );
    const caption = element(
      "caption",
      { class: "muted" },
      rows.length > TABLE_ROWS
        ? `The first ${TABLE_ROWS} of ${number.format(rows.length)} rows in this order; ` +
            "the CSV has them all."
        : `${number.format(rows.length)} rows.`,
    );
    table.replaceChildren(caption, element("thead", {}, head), element("tbody", {}, ...body));
  };
  render();
}

function drawFailures(failures) {
  const section = document.getElementById("report-failures");
  section.hidden = failures.length === 0;
  const table = document.getElementById("report-failures-table");
  table.replaceChildren(
    element(
      "thead",
      {},
      element(
        "tr",
        {},
        ...["Device", "Code", "What happened"].map((label) => element("th", { scope: "col" }, label)),
      ),
    ),
    element(
      "tbody",
      {},
      ...failures.map((failure) =>
        element(
          "tr",
          {},
          element("td", {}, `${failure.device.kind}:${failure.device.identifier}`),
          element("td", {}, element("code", {}, failure.code)),
          element("td", {}, failure.message),
        ),
      ),
    ),
  );
}

csvButton.addEventListener("click", async () => {
  hide(reportMessage);
  const done = busy(csvButton, "Downloading…");
  try {
    let response;
    try {
      response = await fetch(`/exports/provisioning-report.csv?${lastCsv}`, { headers: headers() });
    } catch {
      throw unreachable();
    }
    if (!response.ok) {
      let error;
      try {
        error = describe((await response.json()).errors[0]);
      } catch {
        error = new ApiError("The CSV could not be made.", `HTTP ${response.status}.`, "HTTP_ERROR");
      }
      throw error;
    }
    const link = element("a", {
      href: URL.createObjectURL(await response.blob()),
      download: "provisioning-report.csv",
    });
    document.body.append(link);
    link.click();
    link.remove();
    URL.revokeObjectURL(link.href);
  } catch (error) {
    show(reportMessage, error);
  } finally {
    done();
  }
});

// --- Report jobs -------------------------------------------------------------------------

const jobBox = document.getElementById("job");
const jobState = document.getElementById("job-state");
const jobProgress = document.getElementById("job-progress");
const jobHistory = document.getElementById("job-history");
const cancelButton = document.getElementById("cancel-job");
let job = null;

document.getElementById("start-job").addEventListener("click", async () => {
  hide(reportMessage);
  let request;
  try {
    request = reportRequest();
  } catch (error) {
    show(reportMessage, error);
    return;
  }
  job?.unsubscribe();
  const done = busy(document.getElementById("start-job"), "Starting…");
  try {
    const { data } = await graphql("DashboardStartReport", { input: request.input });
    const { job: started, userErrors } = data.startProvisioningReport;
    if (userErrors.length) {
      throw new ApiError(
        "The job could not start.",
        userErrors.map((error) => error.message).join(" "),
        userErrors[0].code,
      );
    }
    watchJob(started, request.input);
  } catch (error) {
    show(reportMessage, error);
  } finally {
    done();
  }
});

function progressText(update) {
  const { devicesDone, devicesTotal, upstreamCalls, cacheHits } = update.progress;
  const devices = devicesTotal
    ? `${number.format(devicesDone)} of ${number.format(devicesTotal)} devices`
    : "listing the account's devices";
  const calls = `${number.format(upstreamCalls)} upstream calls`;
  return `${devices} · ${calls} · ${number.format(cacheHits)} cache hits`;
}

function watchJob(started, input) {
  reportResult.hidden = true;
  csvButton.disabled = true;
  jobBox.hidden = false;
  jobBox.dataset.state = started.state;
  jobHistory.replaceChildren();
  document.getElementById("job-history-box").open = false;
  jobProgress.removeAttribute("value");
  jobState.textContent = `Job ${started.state.toLowerCase()}…`;
  cancelButton.hidden = false;
  cancelButton.disabled = false;
  job = { id: started.id, unsubscribe: () => {} };
  const mine = job;
  mine.unsubscribe = subscribe("DashboardReportProgress", { jobId: started.id }, {
    next(data) {
      const update = data.provisioningReportProgress;
      jobBox.dataset.state = update.state;
      const { devicesDone, devicesTotal } = update.progress;
      if (devicesTotal) {
        jobProgress.max = devicesTotal;
        jobProgress.value = devicesDone;
      }
      jobProgress.setAttribute("aria-valuetext", progressText(update));
      const state = `${update.state.charAt(0)}${update.state.slice(1).toLowerCase()}`;
      jobState.textContent = `${state}: ${progressText(update)}`;
      jobHistory.append(
        element(
          "li",
          { "data-done": devicesDone, "data-total": devicesTotal },
          element("time", {}, new Date().toLocaleTimeString("en-GB")),
          ` ${update.state.toLowerCase()} · ${progressText(update)}`,
        ),
      );
      if (FINAL_STATES.has(update.state)) {
        finishJob(update, input);
      }
    },
    error(error) {
      cancelButton.hidden = true;
      show(reportMessage, error);
    },
    complete() {},
  });
}

function finishJob(update, input) {
  cancelButton.hidden = true;
  document.getElementById("job-history-box").open = true;
  if (update.state === "SUCCEEDED") {
    jobProgress.max = 1;
    jobProgress.value = 1;
    lastCsv = new URLSearchParams({ jobId: update.id });
    drawReport(update.result, input, update.progress, []);
  } else if (update.state === "FAILED") {
    show(reportMessage, new ApiError("The report job failed.", update.error ?? "", null));
  } else {
    show(reportMessage, { message: "The report job was cancelled: nothing was kept." }, "info");
  }
}

cancelButton.addEventListener("click", async () => {
  if (!job) {
    return;
  }
  cancelButton.disabled = true;
  try {
    await graphql("DashboardCancelReport", { id: job.id });
  } catch (error) {
    cancelButton.disabled = false;
    show(reportMessage, error);
  }
});

// --- A device ----------------------------------------------------------------------------

const deviceForm = document.getElementById("device-form");
const deviceMessage = document.getElementById("device-message");
const timeline = document.getElementById("timeline");
const olderButton = document.getElementById("timeline-older");
let deviceQuery = null;

async function loadDeviceChoices() {
  try {
    const { data } = await graphql("DashboardDevices", { first: 200 });
    const choices = document.getElementById("device-choices");
    choices.replaceChildren(
      ...data.devices.edges.map(({ node }) =>
        element("option", { value: node.identifier.identifier }, node.identifier.kind),
      ),
    );
    const kinds = new Map(
      data.devices.edges.map(({ node }) => [node.identifier.identifier, node.identifier.kind]),
    );
    document.getElementById("device-identifier").addEventListener("change", (event) => {
      const kind = kinds.get(event.target.value.trim());
      if (kind) {
        document.getElementById("device-kind").value = kind;
      }
    });
  } catch {
    // The list only suggests identifiers; typing one works without it.
  }
}

deviceForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = deviceForm.elements;
  const eventTypes = form.eventTypes.value.split(",").map((value) => value.trim()).filter(Boolean);
  const filter = {};
  if (eventTypes.length) {
    filter.eventTypes = eventTypes;
  }
  if (form.status.value) {
    filter.statuses = [form.status.value];
  }
  deviceQuery = {
    kind: form.kind.value,
    identifier: form.identifier.value.trim(),
    filter: Object.keys(filter).length ? filter : null,
  };
  hide(deviceMessage);
  timeline.replaceChildren();
  document.getElementById("recipes").replaceChildren();
  document.getElementById("device-result").hidden = true;
  await Promise.all([loadTimeline(null), loadRecipes()]);
});

olderButton.addEventListener("click", () => loadTimeline(olderButton.dataset.before));

async function loadTimeline(before) {
  const asked = deviceQuery;
  const done = busy(olderButton, "Loading…");
  try {
    const { data, extensions } = await graphql("DashboardDeviceTimeline", {
      ...asked,
      last: TIMELINE_PAGE,
      before,
    });
    if (asked !== deviceQuery) {
      return;
    }
    if (extensions.warnings?.length) {
      show(deviceMessage, caveat(extensions.warnings), "info");
    }
    if (data.device === null) {
      const unknown = `The upstream does not know the device ${asked.kind}:${asked.identifier}.`;
      show(deviceMessage, { message: unknown }, "info");
      return;
    }
    document.getElementById("device-result").hidden = false;
    const device = data.device;
    document.getElementById("device-identifiers").textContent =
      `Known as ${device.identifiers.map((id) => `${id.kind}:${id.identifier}`).join(", ")}`;
    const history = device.provisioningHistory;
    // A page is oldest first; the timeline is newest first.
    const items = [...history.edges].reverse().map(({ node }) => timelineItem(node));
    timeline.append(...items);
    if (!timeline.children.length) {
      const none = asked.filter ? "No events match these filters." : "This device has no events.";
      timeline.append(element("li", { class: "empty" }, none));
    }
    olderButton.hidden = !history.pageInfo.hasPreviousPage;
    olderButton.dataset.before = history.pageInfo.startCursor ?? "";
    if (before && items.length) {
      items[0].focus();
    }
  } catch (error) {
    show(deviceMessage, error);
  } finally {
    done();
  }
}

function timelineItem(event) {
  const failed = event.status.toLowerCase() === "failure";
  const details = [
    event.eventBy && `by ${event.eventBy}`,
    event.servicePlan && `plan ${event.servicePlan}`,
    event.mdn && `MDN ${event.mdn}`,
    ...event.extendedAttributes.map((attribute) => `${attribute.key}=${attribute.value ?? ""}`),
  ].filter(Boolean);
  return element(
    "li",
    { class: failed ? "failure" : null, tabindex: "-1" },
    element("time", { datetime: event.occurredAt }, when(event.occurredAt, "UTC"), " UTC"),
    " ",
    element("strong", {}, event.eventType),
    " ",
    element("span", { class: `badge ${failed ? "failure" : "success"}` }, event.status),
    details.length ? element("div", { class: "muted" }, details.join(" · ")) : null,
  );
}

async function loadRecipes() {
  const asked = deviceQuery;
  const list = document.getElementById("recipes");
  try {
    const { data } = await graphql("DashboardDeviceRecipes", {
      kind: asked.kind,
      identifier: asked.identifier,
      first: 50,
    });
    if (asked !== deviceQuery || data.device === null) {
      return;
    }
    const recipes = data.device.provisioningRecipes;
    list.replaceChildren(
      ...recipes.edges.map(({ node }) =>
        element(
          "li",
          {},
          element("strong", {}, node.deviceName ?? node.serialNumber ?? node.uid),
          " ",
          element("span", { class: `badge ${node.status}` }, node.status),
          element(
            "div",
            { class: "muted" },
            [
              node.brand,
              node.model,
              node.serialNumber && `S/N ${node.serialNumber}`,
              `recipe ${node.uid}`,
              `created ${when(node.createdAt, "UTC")} UTC`,
            ]
              .filter(Boolean)
              .join(" · "),
          ),
          node.errorMessage ? element("div", {}, node.errorMessage) : null,
        ),
      ),
    );
    if (!recipes.edges.length) {
      const none = "No recipe of your organizations targets this device.";
      list.append(element("li", { class: "muted" }, none));
    } else if (recipes.pageInfo.hasNextPage) {
      list.append(element("li", { class: "muted" }, `The first 50 of ${recipes.totalCount}.`));
    }
  } catch (error) {
    list.replaceChildren(
      element("li", { class: "notice error", role: "alert" }, `Recipes: ${error.message}`),
    );
  }
}

// --- Live activity -----------------------------------------------------------------------

const live = (() => {
  const feed = document.getElementById("live-feed");
  const state = document.getElementById("live-state");
  const message = document.getElementById("live-message");
  const empty = document.getElementById("live-empty");
  // ?after=<event id> in the address starts the feed after that event (a link that
  // resumes where someone left off); else it starts with the recent events the service
  // keeps, and goes on from where its event log stood when they were read.
  let lastId = new URLSearchParams(window.location.search).get("after");
  let stop = () => {};
  let retry = null;
  let attempt = 0;
  let runs = 0;

  function add(event, fresh = true) {
    lastId = event.id;
    attempt = 0;
    const created = event.__typename === "DeviceProvisioningRecipeCreated";
    const payload = event.payload;
    if (fresh) {
      for (const old of feed.querySelectorAll(".fresh")) {
        old.classList.remove("fresh");
      }
    }
    feed.prepend(
      element(
        "li",
        { class: fresh ? "fresh" : null, "data-event-id": event.id, "data-uid": payload.uid },
        // When the service recorded it, in the browser's time zone.
        element("time", { datetime: event.occurredAt }, when(event.occurredAt)),
        " ",
        element("strong", {}, created ? "Recipe created" : "Status changed"),
        " ",
        element("span", { class: `badge ${payload.status.toUpperCase()}` }, payload.status),
        element(
          "div",
          { class: "muted" },
          [
            created && (payload.deviceName ?? payload.serialNumber),
            created && [payload.brand, payload.model].filter(Boolean).join(" "),
            `recipe ${payload.uid}`,
            `organization ${payload.organizationUid}`,
            payload.errorMessage,
          ]
            .filter(Boolean)
            .join(" · "),
        ),
      ),
    );
    while (feed.children.length > FEED_LENGTH) {
      feed.lastElementChild.remove();
    }
    empty.hidden = true;
  }

  async function start() {
    const run = ++runs;
    clearTimeout(retry);
    hide(message);
    stop = () => {};
    const resuming = lastId !== null;
    if (!resuming) {
      state.textContent = "Loading recent events…";
      let recent;
      try {
        recent = (await graphql("DashboardRecentRecipeEvents", { last: RECENT_EVENTS })).data;
      } catch (error) {
        if (run === runs) {
          stopOrRetry(error);
        }
        return;
      }
      if (run !== runs) {
        return; // restarted meanwhile: the newer start shows them
      }
      // Oldest first, each put above the one before. The subscription goes on from where
      // the service's event log stood when they were read: nothing missed, nothing twice.
      for (const edge of recent.provisioningRecipeEvents.edges) {
        add(edge.node, false);
      }
      lastId = recent.provisioningRecipeEvents.latestEventId;
    }
    state.textContent = resuming ? `Connecting: resuming after event ${lastId}…` : "Connecting…";
    stop = subscribe("DashboardRecipeEvents", { after: lastId }, {
      next(data) {
        add(data.provisioningRecipeEvents);
        state.textContent = "Live: listening for recipe events.";
      },
      error(error, transient) {
        if (!transient) {
          state.textContent = "Stopped.";
          show(message, error);
          return;
        }
        reconnectLater(error);
      },
      complete() {
        reconnectLater(null);
      },
    });
  }

  // The server acknowledges the connection before the first event, if any.
  document.addEventListener("socket-connected", () => {
    if (state.textContent.startsWith("Connecting")) {
      state.textContent = "Live: listening for recipe events.";
    }
  });

  /** An unreachable service is tried again later; any other error stops the feed. */
  function stopOrRetry(error) {
    if (error.code === null) {
      reconnectLater(error);
    } else {
      state.textContent = "Stopped.";
      show(message, error);
    }
  }

  function reconnectLater(error) {
    const wait = Math.min(30, 2 ** attempt);
    attempt += 1;
    const resuming = lastId ? `, resuming after event ${lastId}` : "";
    state.textContent = `Connection lost; reconnecting in ${wait} s${resuming}.`;
    if (error) {
      show(message, error, "info");
    }
    socketClient?.dispose();
    socketClient = null;
    retry = setTimeout(start, wait * 1000);
  }

  return {
    start,
    restart() {
      stop();
      start();
    },
  };
})();

// --- Start -------------------------------------------------------------------------------

const ON_OPEN = {
  device: loadDeviceChoices,
  live: () => live.start(),
};

if (window.Chart === undefined || window.graphqlWs === undefined) {
  document.getElementById("missing").hidden = false;
  document.querySelector(".tabs").hidden = true;
} else {
  fillReportForm();
  describeToken();
  const wanted = window.location.hash.slice(1);
  select(tabs.find((tab) => tab.dataset.panel === wanted) ?? tabs[0]);
}
