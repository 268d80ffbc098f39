// API keys: create (shown once, with a copy button), list, revoke.

import { api } from "./api.js";
import { $, badge, busy, fillTable, formatDate, h, say } from "./dom.js";

function row(key) {
  const revoked = Boolean(key.revoked_at);
  const revoke = h("button", { type: "button", className: "danger small", "aria-label": `Revoke ${key.name}` }, "Revoke");
  revoke.addEventListener("click", () =>
    busy(revoke, "Revoking…", async () => {
      try {
        await api(`/api/v1/api-keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
        say($("#keys-message"), `Revoked "${key.name}".`);
      } catch (error) {
        say($("#keys-message"), error.message, "error");
      }
      await refresh();
    }),
  );
  return h(
    "tr",
    { dataset: { key: key.name } },
    h("td", {}, key.name),
    h("td", {}, h("code", {}, `${key.prefix}…`)),
    h("td", { className: "hide-narrow" }, formatDate(key.created_at)),
    h("td", {}, revoked ? badge("revoked", "bad") : badge("active", "ok")),
    h("td", { className: "actions-cell" }, revoked ? null : revoke),
  );
}

async function refresh() {
  try {
    const keys = await api("/api/v1/api-keys");
    fillTable($("#keys-table tbody"), keys.map(row), "No API keys yet.", 5);
  } catch (error) {
    say($("#keys-message"), error.message, "error");
  }
}

async function create(event) {
  event.preventDefault();
  const name = $("#key-name").value.trim();
  const message = $("#keys-message");
  if (!name) {
    say(message, "Give the key a name.", "error");
    return;
  }
  await busy($("#key-create"), "Creating…", async () => {
    try {
      const created = await api("/api/v1/api-keys", { method: "POST", json: { name } });
      $("#key-value").textContent = created.key;
      $("#key-created").hidden = false;
      $("#key-name").value = "";
      say(message, "");
      $("#key-copy").focus();
      await refresh();
    } catch (error) {
      say(message, error.message, "error");
    }
  });
}

async function copy() {
  const button = $("#key-copy");
  try {
    await navigator.clipboard.writeText($("#key-value").textContent);
    button.textContent = "Copied";
  } catch {
    // No clipboard access (an insecure origin, a denied permission): select it for Ctrl+C.
    getSelection().selectAllChildren($("#key-value"));
    button.textContent = "Press Ctrl+C";
  }
  setTimeout(() => (button.textContent = "Copy"), 2000);
}

export function initKeys({ first }) {
  if (first) {
    $("#key-form").addEventListener("submit", create);
    $("#key-copy").addEventListener("click", copy);
  } else {
    $("#key-created").hidden = true; // the key is shown once: not again after leaving
  }
  return refresh();
}
