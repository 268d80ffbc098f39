// Small DOM helpers. Text is always set as text, never parsed as HTML.

/** An element: h("td", {className: "x"}, "text", child, ...). */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (key in node && !key.includes("-")) {
      node[key] = value;
    } else {
      node.setAttribute(key, value === true ? "" : value);
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** Show `text` in a message element; kind: "ok", "error" or "info". Empty text hides it. */
export function say(element, text, kind = "ok") {
  element.classList.remove("error", "info");
  if (kind !== "ok") element.classList.add(kind);
  element.textContent = text ?? "";
  element.hidden = !text;
}

/** Replace a table body's rows, or show `empty` across the table. */
export function fillTable(tbody, rows, empty, columns) {
  tbody.replaceChildren(
    ...(rows.length ? rows : [h("tr", {}, h("td", { className: "empty", colSpan: columns }, empty))]),
  );
}

/** Run `action` with `button` disabled (and relabelled) until it settles. */
export async function busy(button, label, action) {
  const original = button.textContent;
  button.disabled = true;
  if (label) button.textContent = label;
  try {
    return await action();
  } finally {
    button.disabled = false;
    button.textContent = original;
  }
}

export function badge(text, kind = "") {
  return h("span", { className: `badge ${kind}`.trim() }, text);
}

export function formatDate(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? value : date.toLocaleString();
}

export function formatNumber(value) {
  return typeof value === "number" ? value.toLocaleString("en-US") : "—";
}
