// The fallback order editor: the providers tried, in order, when the active one fails before
// answering. Add, remove, move up and down (buttons, so the keyboard does it all), and each
// cloud entry's "Allow cloud" opt-in. It only edits; settings.js saves what `changes()` gives.

import { $, badge, h } from "./dom.js";

const SOURCE_WORDS = { database: "saved", environment: "from the environment", unset: "not set" };

const state = { providers: [], entries: [], initial: "[]", active: null };

const byName = (name) => state.providers.find((p) => p.provider === name);
const nameOf = (name) => byName(name)?.display_name ?? name;
const isLocal = (name) => Boolean(byName(name)?.local);

/** Show a chain: `settings` is GET /api/v1/llm-settings, `field` the fallback field of /fields. */
export function showFallback(settings, field) {
  state.providers = settings.providers;
  state.entries = settings.fallback_providers.map((e) => ({ provider: e.provider, allow_cloud: e.allow_cloud }));
  state.initial = JSON.stringify(state.entries);
  state.active = settings.provider;
  $("#fallback-source").textContent = field
    ? `${SOURCE_WORDS[field.source] ?? field.source} · ${field.env}`
    : "";
  $("#fallback-cloud-hint").textContent = cloudSentence();
  render();
}

/** The active provider as the form has it now (it is never its own fallback). */
export function setActiveProvider(provider) {
  state.active = provider;
  render();
}

/** The chain to save, or null when it is as loaded. */
export function fallbackChanges() {
  const now = JSON.stringify(state.entries);
  return now === state.initial ? null : state.entries.map((e) => ({ ...e }));
}

function cloudSentence() {
  const names = (local) => state.providers.filter((p) => p.local === local).map((p) => p.display_name).join(", ");
  return (
    `Local stays local: while the active provider runs on your own machines (${names(true)}), ` +
    `a cloud provider (${names(false)}) is never used as its fallback unless you tick ` +
    "“Allow cloud” on that entry, because prompts would then leave your machines."
  );
}

/** Say what changed to a screen reader (the list itself changes silently). */
function announce(text) {
  $("#fallback-status").textContent = text;
}

function move(index, step, focusClass) {
  const [entry] = state.entries.splice(index, 1);
  state.entries.splice(index + step, 0, entry);
  render();
  announce(`${nameOf(entry.provider)} moved to position ${index + step + 1} of ${state.entries.length}.`);
  const row = $(`#fallback-list li[data-fallback="${entry.provider}"]`);
  // Keep the keyboard where it was; at an end that button is disabled, so use the other one.
  const button = $(`.${focusClass}`, row);
  (button.disabled ? $(`.${focusClass === "up" ? "down" : "up"}`, row) : button).focus();
}

function remove(index) {
  const [entry] = state.entries.splice(index, 1);
  render();
  announce(`${nameOf(entry.provider)} removed from the fallback order.`);
  const next = document.querySelectorAll("#fallback-list .remove")[index] ?? document.querySelectorAll("#fallback-list .remove")[index - 1];
  (next ?? $("#fallback-add")).focus();
}

function add() {
  const provider = $("#fallback-add").value;
  if (!provider) return;
  state.entries.push({ provider, allow_cloud: false });
  render();
  announce(`${nameOf(provider)} added at position ${state.entries.length}.`);
  $("#fallback-add").focus();
}

function notes(entry) {
  const provider = byName(entry.provider);
  const found = [];
  if (entry.provider === state.active) found.push(badge("active: dropped on save", "warn"));
  if (!provider?.model) found.push(badge("no model set", "warn"));
  if (isLocal(state.active) && !provider?.local && !entry.allow_cloud) found.push(badge("needs Allow cloud", "warn"));
  return found;
}

function row(entry, index) {
  const name = nameOf(entry.provider);
  const local = isLocal(entry.provider);
  const model = byName(entry.provider)?.model;
  const last = index === state.entries.length - 1;
  const checkId = `fallback-cloud-${entry.provider}`;
  const allow = local
    ? null
    : h(
        "span",
        { className: "check" },
        h("input", {
          type: "checkbox",
          id: checkId,
          checked: entry.allow_cloud,
          onchange: (event) => {
            entry.allow_cloud = event.target.checked;
            render();
            $(`#${checkId}`).focus();
          },
        }),
        h("label", { htmlFor: checkId }, "Allow cloud", h("span", { className: "visually-hidden" }, ` fallback to ${name}`)),
      );
  return h(
    "li",
    { dataset: { fallback: entry.provider } },
    h(
      "div",
      { className: "grow" },
      h("span", { className: "pos", "aria-hidden": "true" }, `${index + 1}.`),
      h("strong", {}, name),
      badge(local ? "local" : "cloud"),
      model ? h("span", { className: "note" }, `model ${model}`) : null,
      notes(entry),
      allow,
    ),
    h(
      "div",
      { className: "order-buttons" },
      h("button", { type: "button", className: "ghost small up", "aria-label": `Move ${name} up`, title: "Move up", disabled: index === 0, onclick: () => move(index, -1, "up") }, "↑"),
      h("button", { type: "button", className: "ghost small down", "aria-label": `Move ${name} down`, title: "Move down", disabled: last, onclick: () => move(index, 1, "down") }, "↓"),
      h("button", { type: "button", className: "danger small remove", "aria-label": `Remove ${name}`, onclick: () => remove(index) }, "Remove"),
    ),
  );
}

function render() {
  $("#fallback-list").replaceChildren(...state.entries.map(row));
  $("#fallback-empty").textContent = state.entries.length
    ? ""
    : "No fallback: when the active provider fails, the caller gets its error. Saving an empty list restores LLM_FALLBACK_PROVIDERS, if set.";
  const chosen = new Set(state.entries.map((e) => e.provider));
  const left = state.providers.filter((p) => !chosen.has(p.provider) && p.provider !== state.active);
  const select = $("#fallback-add");
  select.replaceChildren(
    ...left.map((p) => h("option", { value: p.provider }, `${p.display_name} (${p.local ? "local" : "cloud"})`)),
  );
  select.disabled = !left.length;
  $("#fallback-add-button").disabled = !left.length;
}

/** Wire the editor's buttons once. */
export function initFallback() {
  $("#fallback-add-button").addEventListener("click", add);
}
