// Audit (admins only): who changed users, API keys and settings, from GET /api/v1/audit,
// newest first, a page at a time.

import { api } from "./api.js";
import { $, busy, fillTable, formatDate, formatNumber, h, say } from "./dom.js";

const PAGE = 50;
const ACTIONS = {
  "user.create": "created user",
  "user.update": "changed user",
  "user.deactivate": "deactivated user",
  "user.password_change": "changed the password of user",
  "api_key.create": "created API key",
  "api_key.revoke": "revoked API key",
  "llm_settings.create": "saved LLM settings",
  "llm_settings.update": "changed LLM settings",
};

let skip = 0;

function shown(value) {
  if (value === null || value === undefined) return "none";
  return typeof value === "string" ? value : JSON.stringify(value);
}

function changes(event) {
  const entries = Object.entries(event.changes ?? {});
  if (!entries.length) return h("span", { className: "muted" }, "—");
  return h(
    "ul",
    { className: "changes" },
    entries.map(([field, pair]) => {
      const [before, after] = Array.isArray(pair) ? pair : [null, pair];
      const created = event.action.endsWith(".create"); // nothing before: the new value alone
      return h("li", {}, h("strong", {}, field), created ? `: ${shown(after)}` : `: ${shown(before)} → ${shown(after)}`);
    }),
  );
}

function row(event) {
  const what = ACTIONS[event.action] ?? event.action;
  const target = event.target_type === "llm_settings" ? null : h("code", {}, event.target_id);
  const who = () => event.actor_email ?? h("span", { className: "muted" }, "command line");
  return h(
    "tr",
    { dataset: { action: event.action } },
    h(
      "td",
      {},
      h("time", { dateTime: event.at }, formatDate(event.at)),
      h("div", { className: "show-narrow who-narrow" }, who()), // the Who column is hidden there
    ),
    h("td", { className: "hide-narrow" }, who()),
    h("td", {}, h("div", { className: "what" }, what, target ? " " : null, target), changes(event)),
  );
}

async function refresh() {
  const message = $("#audit-message");
  try {
    const page = await api(`/api/v1/audit?skip=${skip}&limit=${PAGE}`);
    say(message, "");
    fillTable($("#audit-table tbody"), page.data.map(row), skip ? "No older changes." : "No changes recorded yet.", 3);
    const last = skip + page.data.length;
    $("#audit-range").textContent = page.data.length
      ? `${formatNumber(skip + 1)}–${formatNumber(last)} of ${formatNumber(page.count)}`
      : "";
    $("#audit-older").disabled = last >= page.count;
  } catch (error) {
    say(message, `Could not load the audit trail: ${error.message}`, "error");
    $("#audit-older").disabled = false; // try again
  } finally {
    $("#audit-newer").disabled = skip === 0;
  }
}

function move(by) {
  skip = Math.max(0, skip + by);
  $("#audit-older").disabled = $("#audit-newer").disabled = true; // until the page is in
  return refresh();
}

export function initAudit({ first }) {
  if (first) {
    $("#audit-older").addEventListener("click", () => move(PAGE));
    $("#audit-newer").addEventListener("click", () => move(-PAGE));
    $("#audit-reload").addEventListener("click", () => busy($("#audit-reload"), "Refreshing…", () => move(-skip)));
  }
  return refresh();
}
