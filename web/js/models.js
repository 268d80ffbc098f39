// LM Studio models: what is downloaded and loaded, with load and unload (LM Studio >= 0.4).

import { api } from "./api.js";
import { $, badge, fillTable, formatNumber, h, say } from "./dom.js";

const BASE = "/api/v1/llm-settings/lmstudio/models";
let working = false;

function numberFrom(input, scale = 1) {
  const raw = input.value.trim();
  if (!raw) return undefined;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < Number(input.min) || value > Number(input.max)) {
    throw new Error(`${input.labels[0].textContent} must be a whole number from ${input.min} to ${input.max}.`);
  }
  return value * scale;
}

async function act(model, action, button) {
  if (working) return;
  const message = $("#models-message");
  let body;
  try {
    body = { model };
    if (action === "load") {
      const context = numberFrom($("#load-context"));
      const ttl = numberFrom($("#load-ttl"), 60);
      if (context !== undefined) body.context_length = context;
      if (ttl !== undefined) body.ttl = ttl;
    }
  } catch (error) {
    say(message, error.message, "error");
    return;
  }
  working = true;
  for (const other of document.querySelectorAll("#models-table button")) other.disabled = true;
  const verb = action === "load" ? "Loading" : "Unloading";
  const started = performance.now();
  const tick = () => say(message, `${verb} ${model}… ${Math.round((performance.now() - started) / 1000)} s`, "info");
  tick();
  const timer = setInterval(tick, 1000);
  button.textContent = `${verb}…`;
  try {
    const result = await api(`${BASE}/${action}`, { method: "POST", json: body });
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const words = {
      loaded: `Loaded ${model} in ${seconds} s.`,
      "already-loaded": `${model} was already loaded: nothing to do.`,
      unloaded: `Unloaded ${model}.`,
      "not-loaded": `${model} was not loaded: nothing to do.`,
    };
    clearInterval(timer);
    say(message, words[result.status] ?? `${model}: ${result.status}`);
  } catch (error) {
    clearInterval(timer);
    say(message, error.message, "error");
  } finally {
    working = false;
    await refresh(false);
  }
}

function row(model) {
  const loaded = model.state === "loaded";
  const action = loaded ? "unload" : "load";
  const button = h(
    "button",
    { type: "button", className: loaded ? "danger small" : "small", "aria-label": `${loaded ? "Unload" : "Load"} ${model.id}` },
    loaded ? "Unload" : "Load",
  );
  button.addEventListener("click", () => act(model.id, action, button));
  return h(
    "tr",
    { dataset: { model: model.id } },
    h("td", {}, h("code", {}, model.id)),
    h("td", { className: "hide-narrow" }, model.type ?? "—"),
    h("td", { className: "state" }, model.state ? badge(loaded ? "loaded" : "not loaded", loaded ? "ok" : "") : "—"),
    h("td", { className: "hide-narrow" }, formatNumber(model.max_context_length)),
    h("td", { className: "actions-cell" }, button),
  );
}

async function refresh(clearMessage = true) {
  const tbody = $("#models-table tbody");
  const message = $("#models-message");
  try {
    const detail = await api(`${BASE}?detail=true`);
    fillTable(tbody, detail.models.map(row), "LM Studio has no models downloaded.", 5);
    if (clearMessage) say(message, detail.message ?? "", "info");
  } catch (error) {
    fillTable(tbody, [], "Could not list the models.", 5);
    say(message, error.message, "error");
  }
}

export function initModels({ first }) {
  if (first) $("#models-reload").addEventListener("click", () => refresh());
  return refresh();
}
