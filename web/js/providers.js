// Providers: each one's health, from GET /api/v1/llm-settings/health.

import { api } from "./api.js";
import { $, badge, busy, h } from "./dom.js";

const HEALTH = "/api/v1/llm-settings/health";

function yesNo(value, yes, no, unknown = "not checked") {
  if (value === null || value === undefined) return badge(unknown);
  return value ? badge(yes, "ok") : badge(no, "bad");
}

function keyWords(item) {
  if (item.key_set) return "set"; // LM Studio's optional token counts too
  return item.needs_key ? "missing" : "not needed";
}

function card(item) {
  const button = h("button", { type: "button", className: "ghost small" }, "Test connection");
  const node = h(
    "article",
    { className: "card provider", dataset: { provider: item.provider } },
    h(
      "h3",
      {},
      item.display_name,
      badge(item.local ? "local" : "cloud"),
      item.active ? badge("active", "accent") : null,
      item.configured ? yesNo(item.reachable, "reachable", "unreachable") : badge("not configured", "warn"),
    ),
    h(
      "dl",
      { className: "facts" },
      h("dt", {}, "Latency"),
      h("dd", { className: "latency" }, item.latency_ms === null ? "—" : `${Math.round(item.latency_ms)} ms`),
      h("dt", {}, "Models"),
      h("dd", { className: "model-count" }, item.model_count ?? "—"),
      h("dt", {}, "Key"),
      h("dd", { className: "key" }, keyWords(item)),
      h("dt", {}, "Model"),
      h("dd", {}, item.model ?? "none chosen"),
      h("dt", {}, "URL"),
      h("dd", {}, item.base_url),
    ),
    item.error ? h("p", { className: "message error", role: "alert" }, item.error) : null,
    button,
  );
  button.addEventListener("click", () =>
    busy(button, "Testing…", async () => {
      const fresh = await loadHealth(item.provider);
      if (fresh) node.replaceWith(card(fresh[0]));
    }),
  );
  return node;
}

async function loadHealth(provider) {
  const list = $("#providers-list");
  try {
    const url = provider ? `${HEALTH}?provider=${encodeURIComponent(provider)}` : HEALTH;
    return await api(url);
  } catch (error) {
    list.replaceChildren(h("p", { className: "message error", role: "alert" }, error.message));
    return null;
  }
}

async function refresh() {
  const list = $("#providers-list");
  list.setAttribute("aria-busy", "true");
  const items = await loadHealth();
  list.removeAttribute("aria-busy");
  if (items) list.replaceChildren(...items.map(card));
}

export function initProviders({ first }) {
  if (first) {
    const button = $("#providers-test-all");
    button.addEventListener("click", () => busy(button, "Testing…", refresh));
    $("#providers-list").replaceChildren(h("p", { className: "hint" }, "Checking providers…"));
  }
  return refresh();
}
