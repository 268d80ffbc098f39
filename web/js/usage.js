// Usage: requests, tokens, errors and cost from GET /api/v1/usage, grouped, with totals.
// An admin sees everyone's calls, a user their own (the API decides).

import { api } from "./api.js";
import { $, busy, fillTable, formatNumber, h, say } from "./dom.js";

const DAY_MS = 24 * 60 * 60 * 1000;
const DEFAULT_DAYS = 30; // the API's default range
const HEADS = { day: "Day (UTC)", user: "User", api_key: "API key", provider: "Provider", model: "Model" };
const COLUMNS = 6;

let me = null;
let names = { user: new Map(), api_key: new Map() }; // ids → words, where known

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

/** The report's query, or a sentence saying what is wrong with the form. */
function query() {
  const since = $("#usage-since").value;
  const until = $("#usage-until").value;
  if (!since || !until) return { error: "Enter a start and an end date." };
  if (since > until) return { error: "The start date must not be after the end date." };
  const end = new Date(Date.parse(`${until}T00:00:00Z`) + DAY_MS); // the end day is included
  const params = new URLSearchParams({
    group_by: $("#usage-group").value,
    since: `${since}T00:00:00Z`,
    until: end.toISOString(),
  });
  return { params, since, until };
}

/** `text` that may wrap after its thousands separators (a phone has no room for 11 digits
 * in each of five columns); copied, it is the same text. */
function breakable(text) {
  return h("span", {}, text.split(",").flatMap((part, i) => (i ? [",", h("wbr"), part] : [part])));
}

function cost(value) {
  if (value === null || value === undefined) return h("span", { className: "muted" }, "unknown");
  // Cents from a dollar up; fractions of a cent below (a small model's calls cost that).
  const digits = Math.abs(value) >= 1 ? 2 : 6;
  return breakable(`$${value.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits })}`);
}

function label(groupBy, key) {
  if (groupBy === "user") {
    if (key === null) return h("span", { className: "muted" }, "no user (library call)");
    return names.user.get(key) ?? h("code", {}, key);
  }
  if (groupBy === "api_key") {
    if (key === null) return h("span", { className: "muted" }, "no key (logged-in session)");
    return names.api_key.get(key) ?? h("code", {}, key);
  }
  if (key === null || key === "") return h("span", { className: "muted" }, "unknown");
  return key;
}

function numbers(item, cell) {
  return [
    cell({ className: "num" }, breakable(formatNumber(item.requests))),
    cell({ className: "num" }, breakable(formatNumber(item.prompt_tokens))),
    cell({ className: "num" }, breakable(formatNumber(item.completion_tokens))),
    cell({ className: "num" }, breakable(formatNumber(item.errors))),
    cell({ className: "num" }, cost(item.cost)),
  ];
}

const td = (props, ...children) => h("td", props, ...children);

function row(groupBy, group) {
  return h(
    "tr",
    { dataset: { key: group.key ?? "" } },
    h("th", { scope: "row" }, label(groupBy, group.key)),
    ...numbers(group, td),
  );
}

/** Words for ids the caller may read: users (admins), their own API keys. */
async function loadNames() {
  const found = { user: new Map(), api_key: new Map() };
  found.user.set(me.id, me.email);
  const lookups = [api("/api/v1/api-keys")];
  if (me.is_superuser) lookups.push(api("/api/v1/users?limit=500"));
  const [keys, users] = await Promise.allSettled(lookups);
  if (keys.status === "fulfilled") {
    for (const key of keys.value) found.api_key.set(key.id, `${key.name} (${key.prefix}…)`);
  }
  if (users?.status === "fulfilled") {
    for (const user of users.value.data) found.user.set(user.id, user.email);
  }
  names = found;
}

async function refresh() {
  const message = $("#usage-message");
  const asked = query();
  if (asked.error) {
    say(message, asked.error, "error");
    return;
  }
  const groupBy = asked.params.get("group_by");
  $("#usage-table").setAttribute("aria-busy", "true");
  try {
    const report = await api(`/api/v1/usage?${asked.params}`);
    say(message, "");
    $("#usage-key-head").textContent = HEADS[groupBy];
    const span = asked.since === asked.until ? `on ${asked.since}` : `from ${asked.since} to ${asked.until}`;
    $("#usage-caption").textContent = `LLM calls ${span}, by ${HEADS[groupBy].toLowerCase()}`;
    fillTable(
      $("#usage-table tbody"),
      report.groups.map((group) => row(groupBy, group)),
      `No LLM calls ${span} (UTC).`,
      COLUMNS,
    );
    const foot = $("#usage-table tfoot");
    foot.replaceChildren(h("tr", {}, h("th", { scope: "row" }, "Total"), ...numbers(report.totals, td)));
    foot.hidden = report.groups.length === 0;
    const count = report.totals.requests;
    $("#usage-status").textContent = `${formatNumber(count)} ${count === 1 ? "call" : "calls"} ${span}.`;
  } catch (error) {
    say(message, `Could not load usage: ${error.message}`, "error");
  } finally {
    $("#usage-table").removeAttribute("aria-busy");
  }
}

function setDefaultRange() {
  const today = new Date();
  $("#usage-until").value = isoDay(today);
  $("#usage-since").value = isoDay(new Date(today.getTime() - (DEFAULT_DAYS - 1) * DAY_MS));
}

export async function initUsage({ first, user }) {
  me = user;
  if (first) {
    setDefaultRange();
    $("#usage-scope").textContent = user.is_superuser
      ? "LLM calls of every user: requests, tokens, errors and cost."
      : "Your LLM calls: requests, tokens, errors and cost.";
    $("#usage-form").addEventListener("submit", (event) => {
      event.preventDefault();
      return busy($("#usage-show"), "Loading…", refresh);
    });
    $("#usage-group").addEventListener("change", refresh);
    $("#usage-reload").addEventListener("click", () =>
      busy($("#usage-reload"), "Refreshing…", async () => {
        await loadNames();
        await refresh();
      }),
    );
  }
  await loadNames();
  return refresh();
}
