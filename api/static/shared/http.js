// HTTP helpers shared by the web app and the console: a bearer token from POST /v1/auth/token, kept in
// sessionStorage (never the password), and JSON calls that turn an error answer into its `detail`.
export const session = {
  get token() { return sessionStorage.getItem("sb-token"); },
  get user() { return sessionStorage.getItem("sb-user"); },
  save(user, token) { sessionStorage.setItem("sb-user", user); sessionStorage.setItem("sb-token", token); },
  clear() { sessionStorage.removeItem("sb-user"); sessionStorage.removeItem("sb-token"); },
};

export class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function detailOf(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch { return `${response.status} ${response.statusText}`; }
}

export async function call(method, path, body, { raw = false } = {}) {
  const headers = {};
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  if (!response.ok) throw new ApiError(response.status, await detailOf(response));
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

export async function login(username, password) {
  const answer = await call("POST", "/v1/auth/token", { username, password });
  session.save(username, answer.access_token);
  return answer;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}
