// The dashboard's entry point: sign-in, the WebSocket client, the offline banner, the bell and the view router.

import { Api } from "./api.js";
import { h } from "./dom.js";
import { createBell } from "./views/bell.js";
import { jobDetailView, jobsView } from "./views/jobs.js";
import { queuesView } from "./views/queues.js";
import { workflowDetailView, workflowsView } from "./views/workflows.js";

const TOKEN_KEY = "engineroom.token";

/** ``/?token=<JWT>`` signs in once: the token moves to sessionStorage and leaves the address bar. */
function takeToken() {
  const url = new URL(window.location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

/** The token's claims, read without checking the signature: only to shape the page; the server decides. */
function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
    if (typeof claims.sub !== "string" || typeof claims.tenant !== "string") return null;
    return claims;
  } catch (error) {
    return null;
  }
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (window.engineroomClient) window.engineroomClient.close();
  showSignIn(message);
}

function showSignIn(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("who").replaceChildren();
  document.getElementById("bell-slot").replaceChildren();
  document.getElementById("banner").hidden = true;
  const input = h("textarea", { id: "token-input", name: "token", rows: 4, required: true, autocomplete: "off" });
  const form = h(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in"),
    message ? h("p", { class: "error", role: "alert" }, message) : null,
    h("label", { for: "token-input" }, "Access token (JWT), e.g. from ", h("code", {}, "engineroom token"), ":"),
    input,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!claimsOf(token)) {
      showSignIn("That is not a token engineroom issues (a JWT with sub and tenant).");
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    start(token);
  });
  document.getElementById("main").replaceChildren(form);
  input.focus();
}

const STATUS_TEXT = {
  connecting: "Connecting to live updates…",
  reconnecting: "Offline: live updates are interrupted. Reconnecting…",
  closed: "Offline: live updates are closed.",
  unauthorized: "Your token was refused.",
};

function showStatus(status, detail) {
  const banner = document.getElementById("banner");
  document.body.dataset.connection = status;
  if (status === "open") {
    banner.hidden = true;
    return;
  }
  let text = STATUS_TEXT[status] || status;
  if (status === "reconnecting" && detail && detail.delayMs) {
    text = `Offline: live updates are interrupted. Reconnecting in ${Math.ceil(detail.delayMs / 1000)} s…`;
  }
  banner.textContent = text;
  banner.className = `banner banner-${status}`;
  banner.hidden = false;
}

const ROUTES = [
  [/^#\/queues$/, queuesView],
  [/^#\/jobs$/, jobsView],
  [/^#\/jobs\/([0-9A-Z]+)$/, jobDetailView],
  [/^#\/workflows$/, workflowsView],
  [/^#\/workflows\/([0-9A-Z]+)$/, workflowDetailView],
];

function start(token) {
  const claims = claimsOf(token);
  if (!claims) {
    signOut("The saved token could not be read; sign in again.");
    return;
  }
  const principal = { user: claims.sub, tenant: claims.tenant, isAdmin: (claims.roles || []).includes("admin") };
  const api = new Api(token, () => signOut("Your token was refused (expired or invalid); sign in again."));
  let current = null;
  let bell = null;
  let everOpen = false;

  const client = new window.EngineroomClient({
    token,
    // Admins hear every job of their tenant, so queue cards move with everyone's work, not just theirs.
    topics: principal.isAdmin ? ["tenant"] : [],
    onEvent: (event) => {
      if (bell) bell.onEvent(event);
      if (current && current.onEvent) current.onEvent(event);
    },
    onStatus: (status, detail) => {
      showStatus(status, detail);
      if (status === "open") {
        // The bell reads its count again each time the socket opens, the first time included: a notification made
        // between the page's first read and the socket's subscription would otherwise never show (a short job's
        // notification can come that fast).
        if (bell) bell.refresh();
        // Back after a disconnect: the client replays missed events, but figures built from other users' work
        // (queue cards) only come back with a fetch.
        if (everOpen && current && current.refresh) current.refresh();
        everOpen = true;
      }
      if (status === "unauthorized") signOut("Your token was refused (expired or invalid); sign in again.");
    },
    onError: (error) => console.warn("engineroom:", error),
  });
  window.engineroomClient = client;
  const ctx = { api, client, principal };

  document.getElementById("nav").hidden = false;
  document.getElementById("who").replaceChildren(
    h("span", {}, `${principal.user} @ ${principal.tenant}${principal.isAdmin ? " (admin)" : ""}`),
    h("button", { type: "button", class: "link", onclick: () => signOut() }, "Sign out"),
  );
  bell = createBell(ctx);
  document.getElementById("bell-slot").replaceChildren(bell.el);

  function route() {
    const hash = window.location.hash || "#/queues";
    if (current && current.destroy) current.destroy();
    current = null;
    const main = document.getElementById("main");
    for (const [pattern, view] of ROUTES) {
      const match = hash.match(pattern);
      if (match) {
        current = view(ctx, ...match.slice(1));
        main.replaceChildren(current.el);
        break;
      }
    }
    if (!current) main.replaceChildren(h("p", {}, "No such page. ", h("a", { href: "#/queues" }, "Go to queues")));
    for (const link of document.querySelectorAll("#nav a")) {
      const active = hash.startsWith(`#/${link.dataset.view}`);
      if (active) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  window.onhashchange = () => {
    route();
    document.getElementById("main").focus({ preventScroll: true });
  };
  route();
  client.connect();
}

const saved = takeToken();
if (saved) start(saved);
else showSignIn();
