// Fetch wrapper: JSON in and out, the CSRF token on every state-changing request,
// errors as ApiError {status, code, message}. A 401 sends the user to the login page.

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

let csrfToken = null;
const unauthorizedHandlers = [];

export function setCsrf(token) { csrfToken = token; }
export function onUnauthorized(fn) { unauthorizedHandlers.push(fn); }

export async function request(method, path, { params, body, quiet401 = false } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  let resp;
  try {
    resp = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin", cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, "network", `server unreachable (${err.message})`);
  }
  let data = null;
  const type = resp.headers.get("Content-Type") || "";
  if (type.includes("application/json")) data = await resp.json();
  if (!resp.ok) {
    const e = (data && data.error) || {};
    const code = e.code || (resp.status === 404 ? "not_found" : `http_${resp.status}`);
    const message = e.message || (resp.status === 404 ? "not available" : `${resp.status} ${resp.statusText}`);
    const err = new ApiError(resp.status, code, message, data);
    if (resp.status === 401 && !quiet401) unauthorizedHandlers.forEach((fn) => fn(err));
    throw err;
  }
  return data;
}

export const get = (path, params, opts = {}) => request("GET", path, { ...opts, params });
export const post = (path, body = {}, opts = {}) => request("POST", path, { ...opts, body });
export const put = (path, body = {}) => request("PUT", path, { body });
export const del = (path) => request("DELETE", path, {});
