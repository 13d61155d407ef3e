// REST calls with the bearer token; errors carry the HTTP status and FastAPI's ``detail``.

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}: ${JSON.stringify(detail)}`);
    this.status = status;
    this.detail = detail;
  }
}

export class Api {
  constructor(token, onUnauthorized) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  async request(method, path, { params, body } = {}) {
    const url = new URL(path, window.location.origin);
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, value);
    }
    const headers = { Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      if (response.status === 401 && this.onUnauthorized) this.onUnauthorized();
      throw new ApiError(response.status, (data && data.detail) || response.statusText);
    }
    return data;
  }

  get(path, params) {
    return this.request("GET", path, { params });
  }

  post(path, body) {
    return this.request("POST", path, { body: body === undefined ? {} : body });
  }

  put(path, body) {
    return this.request("PUT", path, { body });
  }
}
