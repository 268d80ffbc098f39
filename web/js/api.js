// Talking to the API: the bearer token, JSON, and every failure turned into words.

// The token lives in sessionStorage: it survives a reload of this tab, is not shared with
// other tabs, and is gone when the tab closes. See the README ("Web page").
const TOKEN_KEY = "llm-backend-token";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An API failure with a message fit to show as it is. */
export class ApiError extends Error {
  constructor(message, { status = 0, type = null, body = null, retryAfter = null } = {}) {
    super(message);
    this.status = status;
    this.type = type;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

let onUnauthorized = () => {};

/** Called when a request answers 401 with a token we sent (expired, revoked). */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

/** `fetch` with the token; returns the Response or throws ApiError in words. */
export async function request(path, { method = "GET", json, form, signal, headers = {} } = {}) {
  const init = { method, signal, headers: { Accept: "application/json", ...headers } };
  const token = getToken();
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = new URLSearchParams(form);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("Cannot reach the server: check your network and that the app is running.");
  }
  if (!response.ok) {
    const failure = await errorFrom(response);
    if (response.status === 401 && token) onUnauthorized(failure);
    throw failure;
  }
  return response;
}

/** `request` and the parsed JSON body (null for 204). */
export async function api(path, options) {
  const response = await request(path, options);
  if (response.status === 204) return null;
  return response.json();
}

/** An ApiError from a failed response: the API's `detail`, in words. */
export async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  let message = describe(body?.detail) || `The server answered HTTP ${response.status}.`;
  if (response.status === 429) {
    const wait = Number.isFinite(retryAfter) ? retryAfter : null;
    message = wait === null
      ? "Too many attempts: try again in a moment."
      : `Too many attempts: try again in ${wait} s.`;
  }
  return new ApiError(message, {
    status: response.status,
    type: body?.type ?? null,
    body,
    retryAfter: Number.isFinite(retryAfter) ? retryAfter : null,
  });
}

/** A FastAPI `detail`: a string, or a list of validation errors. */
export function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((item) => {
        const where = (item.loc ?? []).filter((part) => part !== "body").join(".");
        return where ? `${where}: ${item.msg}` : item.msg;
      })
      .join("; ");
  }
  return "";
}
