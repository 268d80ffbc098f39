// A model field's control, filled by discovery (GET /api/v1/llm-settings/{provider}/models?detail=true).
// pick "list": a select of what the provider has (a local provider's downloaded models, loaded
// or not); pick "type": a text box with the provider's models as suggestions (a cloud list is
// long and its names are well known). Either way a failure is said in words under the field.

import { api } from "./api.js";
import { h } from "./dom.js";

let discoveries = new Map(); // discovery URL -> Promise of the detail body

/** Forget what discovery answered (the next render asks the providers again). */
export function forgetDiscoveries() {
  discoveries = new Map();
}

function discover(url) {
  if (!discoveries.has(url)) discoveries.set(url, api(url));
  return discoveries.get(url);
}

/** "id — loaded · 131,072 tokens": what the provider says about a model. */
export function describeModel(model) {
  const parts = [];
  if (model.state) parts.push(model.state === "loaded" ? "loaded" : "not loaded");
  if (model.max_context_length) parts.push(`${model.max_context_length.toLocaleString("en-US")} tokens`);
  if (model.type && model.type !== "llm") parts.push(model.type);
  return parts.length ? `${model.id} — ${parts.join(" · ")}` : model.id;
}

function textControl(field, id, note, list) {
  const input = h("input", {
    id,
    "aria-describedby": note.id,
    name: field.name,
    value: field.value ?? "",
    placeholder: "model name",
    autocomplete: "off",
    spellcheck: false,
  });
  if (list) input.setAttribute("list", list); // `input.list` is read-only: set the attribute
  return input;
}

function summary(detail) {
  const count = detail.models.length;
  const where = detail.base_url ? ` at ${detail.base_url}` : "";
  const models = `${count} model${count === 1 ? "" : "s"}${where}`;
  const knowsState = detail.models.some((model) => model.state);
  return knowsState ? `${models}, ${detail.loaded.length} loaded.` : `${models}: type a name or pick one.`;
}

function fillSelect(select, field, detail) {
  const options = detail.models.map((model) =>
    h("option", { value: model.id, selected: model.id === field.value }, describeModel(model)),
  );
  if (field.value && !detail.models.some((model) => model.id === field.value)) {
    options.unshift(h("option", { value: field.value, selected: true }, `${field.value} — not on the server`));
  }
  if (!field.value) options.unshift(h("option", { value: "", selected: true }, "— choose a model —"));
  select.replaceChildren(...options);
  select.disabled = false;
}

/** The control for a model field; `note` (a <p>) receives what discovery says. */
export function modelControl(field, id, note) {
  const listId = `${id}-suggestions`;
  const byList = field.pick !== "type";
  const control = byList
    ? h("select", { id, name: field.name, disabled: true, "aria-describedby": note.id }, h("option", { value: field.value ?? "" }, field.value ?? "Loading models…"))
    : textControl(field, id, note, listId);
  const suggestions = byList ? null : h("datalist", { id: listId });
  if (!field.discovery) return [control];
  note.textContent = "Asking the provider for its models…";
  discover(field.discovery)
    .then((detail) => {
      if (byList) fillSelect(control, field, detail);
      else suggestions.replaceChildren(...detail.models.map((model) => h("option", { value: model.id }, describeModel(model))));
      note.classList.toggle("error", Boolean(detail.message));
      note.textContent = detail.message ?? summary(detail);
    })
    .catch((error) => {
      // Discovery failed (server down, no key, too old…): say why, and let the admin type.
      if (byList) control.replaceWith(textControl(field, id, note));
      note.classList.add("error");
      const text = error.message.trim();
      note.textContent = `${text}${/[.!?]$/.test(text) ? "" : "."} You can still type a model name.`;
    });
  return suggestions ? [control, suggestions] : [control];
}
