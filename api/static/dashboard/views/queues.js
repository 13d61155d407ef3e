// Queues: one card per engine (GET /queues), a jobs-per-minute sparkline, and admin controls.
//
// The cards are fetched again (throttled) when an event says the figures moved: queue events (admins) and the
// signed-in user's own job events. A socket hears no other user's job events, so other users' load shows on the
// next such event or reconnect: the API has no tenant-wide or per-engine stats event to listen to.

import { errorText, fmtPercent, fmtSeconds, h, s, throttle } from "../dom.js";

/** Jobs-per-minute samples per engine, kept across visits to the view while the page lives. */
const samples = new Map();
const MAX_SAMPLES = 40;

function record(queues) {
  const now = Date.now();
  for (const queue of queues) {
    const list = samples.get(queue.engine) || [];
    list.push({ t: now, value: queue.jobs_per_minute });
    if (list.length > MAX_SAMPLES) list.shift();
    samples.set(queue.engine, list);
  }
}

function sparkline(engine) {
  const list = samples.get(engine) || [];
  const width = 120;
  const height = 28;
  const max = Math.max(1, ...list.map((sample) => sample.value));
  const step = list.length > 1 ? width / (list.length - 1) : width;
  const points = list.map((sample, index) => `${(index * step).toFixed(1)},${(height - 2 - (sample.value / max) * (height - 4)).toFixed(1)}`);
  if (points.length === 1) points.push(`${width},${points[0].split(",")[1]}`);
  const last = list.length ? list[list.length - 1].value : 0;
  return s(
    "svg",
    { class: "sparkline", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": `jobs per minute, latest ${last.toFixed(1)}` },
    s("polyline", { points: points.join(" "), fill: "none", "stroke-width": 2 }),
  );
}

function stat(label, value, name) {
  return h("div", { class: "stat" }, h("dt", {}, label), h("dd", { "data-stat": name }, value));
}

function controls(ctx, queue, reload) {
  const engine = queue.engine;
  const problem = h("div", { class: "control-error" });
  async function act(call) {
    problem.replaceChildren();
    try {
      await call();
      await reload(engine);
    } catch (error) {
      problem.replaceChildren(errorText(error));
    }
  }
  const limitId = `limit-${engine}`;
  const limit = h("input", { id: limitId, type: "number", min: 0, max: 10000, value: queue.max_concurrency, required: true });
  const limitForm = h(
    "form",
    { class: "inline" },
    h("label", { for: limitId }, "Max concurrency"),
    limit,
    h("button", { type: "submit" }, "Save limit"),
  );
  limitForm.addEventListener("submit", (event) => {
    event.preventDefault();
    act(() => ctx.api.put(`/queues/${engine}/limits`, { max_concurrency: Number(limit.value) }));
  });
  let toggle;
  if (queue.paused) {
    toggle = h("button", { type: "button", class: "primary", onclick: () => act(() => ctx.api.post(`/queues/${engine}/resume`)) }, `Resume ${engine}`);
  } else {
    const reasonId = `reason-${engine}`;
    const reason = h("input", { id: reasonId, type: "text", maxlength: 500, required: true, placeholder: "why?" });
    toggle = h(
      "form",
      { class: "inline" },
      h("label", { for: reasonId }, "Pause reason"),
      reason,
      h("button", { type: "submit", class: "danger" }, `Pause ${engine}`),
    );
    toggle.addEventListener("submit", (event) => {
      event.preventDefault();
      act(() => ctx.api.post(`/queues/${engine}/pause`, { reason: reason.value.trim() || "paused from the dashboard" }));
    });
  }
  return h("div", { class: "controls" }, toggle, limitForm, problem);
}

function card(ctx, queue, reload) {
  const paused = queue.paused;
  return h(
    "article",
    { class: `card queue${paused ? " paused" : ""}`, "data-engine": queue.engine, "aria-labelledby": `q-${queue.engine}` },
    h(
      "header",
      {},
      h("h2", { id: `q-${queue.engine}` }, queue.engine),
      paused ? h("span", { class: "paused-badge", "data-paused": "true" }, "PAUSED") : h("span", { class: "live-badge" }, "running"),
    ),
    paused
      ? h("p", { class: "pause-reason" }, `Reason: ${queue.reason || "—"}${queue.paused_by ? ` (by ${queue.paused_by})` : ""}`)
      : null,
    h(
      "dl",
      { class: "stats" },
      stat("Running", `${queue.running} / ${queue.max_concurrency}`, "running"),
      stat("Queued", queue.queued, "queued"),
      stat("Scheduled", queue.scheduled, "scheduled"),
      stat("Retrying", queue.retrying, "retrying"),
      stat("Failed (1 h)", queue.failed_last_hour, "failed"),
      stat("Success", fmtPercent(queue.success_rate), "success"),
      stat("p50 / p95", `${fmtSeconds(queue.p50_duration_s)} / ${fmtSeconds(queue.p95_duration_s)}`, "durations"),
      stat("Jobs/min", queue.jobs_per_minute.toFixed(1), "jpm"),
    ),
    sparkline(queue.engine),
    ctx.principal.isAdmin ? controls(ctx, queue, reload) : null,
  );
}

/** The fresh card, or the existing one with fresh figures around controls someone is using (focus kept). */
function merge(existing, fresh, queue) {
  const controls = existing && existing.querySelector(".controls");
  const using = controls && controls.contains(document.activeElement);
  if (!using || existing.classList.contains("paused") !== queue.paused) return fresh;
  const freshControls = fresh.querySelector(".controls");
  for (const child of [...existing.children]) if (child !== controls) child.remove();
  for (const child of [...fresh.children]) if (child !== freshControls) existing.insertBefore(child, controls);
  return existing;
}

export function queuesView(ctx) {
  const grid = h("div", { class: "grid" });
  const status = h("p", { class: "muted" }, "Loading…");
  const el = h("section", { "aria-labelledby": "queues-title" }, h("h1", { id: "queues-title" }, "Queues"), status, grid);
  let alive = true;

  /** ``acted``: the engine whose control was just used; its card is rebuilt and its first control focused. */
  async function load(acted) {
    try {
      const queues = await ctx.api.get("/queues");
      if (!alive) return;
      record(queues);
      for (const queue of queues) {
        const existing = grid.querySelector(`[data-engine="${queue.engine}"]`);
        const fresh = card(ctx, queue, (engine) => load(engine));
        const next = queue.engine === acted ? fresh : merge(existing, fresh, queue);
        if (!existing) grid.append(next);
        else if (next !== existing) existing.replaceWith(next);
        if (queue.engine === acted) {
          const first = next.querySelector(".controls button");
          if (first) first.focus();
        }
      }
      status.replaceChildren();
    } catch (error) {
      if (alive) status.replaceChildren(errorText(error));
    }
  }
  const reload = throttle(() => load(null), 1000);
  load(null);

  return {
    el,
    refresh: reload,
    onEvent(event) {
      if (event.type.startsWith("queue.") || event.type.startsWith("job.")) reload();
    },
    destroy() {
      alive = false;
    },
  };
}
