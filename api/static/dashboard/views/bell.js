// The notification bell: the unread count, the latest notifications, mark one or all read.

import { errorText, fmtTime, h, s, throttle } from "../dom.js";

/** One small page of unread notifications is asked for: the answer's ``unread_count`` is the bell's number. */
const COUNT_PAGE = 1;

export function createBell(ctx) {
  const count = h("span", { class: "bell-count", "data-unread": "0" }, "0");
  const button = h("button", { type: "button", class: "bell", "aria-expanded": "false", "aria-controls": "bell-panel" },
    s("svg", { viewBox: "0 0 24 24", width: 18, height: 18, "aria-hidden": "true", class: "bell-icon" },
      s("path", { d: "M12 2a6 6 0 0 0-6 6v4l-2 4h16l-2-4V8a6 6 0 0 0-6-6zm-2 16a2 2 0 0 0 4 0z" })), h("span", { class: "sr-only" }, "Notifications, unread: "), count);
  const list = h("ul", { class: "notification-list" });
  const problem = h("div");
  const readAll = h("button", { type: "button", onclick: () => act(() => ctx.api.post("/notifications/read-all")) }, "Mark all read");
  const panel = h("div", { id: "bell-panel", class: "bell-panel card", hidden: true, role: "region", "aria-label": "Notifications" },
    h("div", { class: "row" }, h("h2", {}, "Notifications"), readAll), problem, list);
  const el = h("div", { class: "bell-wrap", hidden: true }, button, panel);

  async function act(call) {
    problem.replaceChildren();
    try {
      await call();
      await load();
    } catch (error) {
      problem.replaceChildren(errorText(error));
    }
  }

  function item(note) {
    return h("li", { class: note.read ? "read" : "unread", "data-notification-id": note.id },
      h("div", {}, h("strong", {}, note.title), " ", h("time", { datetime: note.created_at, class: "muted" }, fmtTime(note.created_at))),
      h("div", {}, note.message),
      note.job_id ? h("a", { href: `#/jobs/${note.job_id}` }, "Open job") : null,
      note.workflow_id && !note.job_id ? h("a", { href: `#/workflows/${note.workflow_id}` }, "Open workflow") : null,
      note.read ? null : h("button", { type: "button", class: "link", onclick: () => act(() => ctx.api.post(`/notifications/${note.id}/read`)) }, "Mark read"));
  }

  let generation = 0;
  let shown = "";

  /** Loads may overlap (an event during a click): only the latest started one is applied, so an answer that left
   *  the server before a "mark read" never paints the notification unread again. */
  async function load() {
    const mine = ++generation;
    try {
      const unread = await ctx.api.get("/notifications", { unread: true, limit: COUNT_PAGE });
      const latest = panel.hidden ? null : await ctx.api.get("/notifications", { limit: 20 });
      if (mine !== generation) return;
      el.hidden = false;
      const number = unread.unread_count;
      count.textContent = String(number);
      count.dataset.unread = String(number);
      const key = latest ? JSON.stringify(latest.items.map((note) => [note.id, note.read])) : "";
      if (latest && key !== shown) {
        // Rebuilt only when something changed, so a button is not swapped out from under a click.
        shown = key;
        list.replaceChildren(...latest.items.map(item));
        if (!latest.items.length) list.replaceChildren(h("li", { class: "muted" }, "Nothing yet."));
      }
    } catch (error) {
      // A gateway without notifications (404) hides the bell; other failures show in the panel.
      if (error.status === 404) el.hidden = true;
      else problem.replaceChildren(errorText(error));
    }
  }
  const reload = throttle(load, 500);

  button.addEventListener("click", () => {
    panel.hidden = !panel.hidden;
    button.setAttribute("aria-expanded", String(!panel.hidden));
    if (!panel.hidden) load();
  });
  panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      panel.hidden = true;
      button.setAttribute("aria-expanded", "false");
      button.focus();
    }
  });
  load();

  return {
    el,
    refresh: reload,
    onEvent(event) {
      if (event.type === "notification.created") reload();
    },
  };
}
