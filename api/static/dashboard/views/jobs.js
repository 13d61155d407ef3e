// Jobs: a filterable, paged list with live progress bars, the submit form, and one job's page.

import {
  START_WRITE_SETTLE_MS, badge, errorText, fmtSeconds, fmtTime, h, json, progressBar, showsBeforeStart, throttle,
} from "../dom.js";
import { artifactsPanel } from "./artifacts.js";
import { submitForm } from "./submit.js";

const STATES = ["pending", "scheduled", "queued", "running", "retrying", "completed", "failed", "cancelled"];
const CANCELLABLE = new Set(["pending", "scheduled", "queued", "running", "retrying"]);
const RETRYABLE = new Set(["failed", "cancelled"]);
const PAGE_SIZE = 20;

/** Filters outlive the view, so coming back from a job's page finds the list as it was left. */
const filters = { state: "", engine: "", task: "", tag: "" };

/** Cancel and retry buttons for a job; ``done(job)`` gets the answer. */
function actions(ctx, job, done, problem) {
  async function act(verb) {
    problem.replaceChildren();
    try {
      done(await ctx.api.post(`/jobs/${job.id}/${verb}`));
    } catch (error) {
      problem.replaceChildren(errorText(error));
    }
  }
  return [
    CANCELLABLE.has(job.state)
      ? h("button", { type: "button", class: "danger", onclick: () => act("cancel"), "aria-label": `Cancel job ${job.id}` }, "Cancel")
      : null,
    RETRYABLE.has(job.state)
      ? h("button", { type: "button", onclick: () => act("retry"), "aria-label": `Retry job ${job.id}` }, "Retry")
      : null,
  ];
}

function row(ctx, job, reload) {
  const problem = h("div");
  const bar = progressBar(job.progress, `progress of ${job.id}`);
  const el = h(
    "li",
    { class: "job-row", "data-job-id": job.id, "data-state": job.state },
    h("div", { class: "job-main" },
      h("a", { href: `#/jobs/${job.id}`, class: "mono" }, job.id),
      h("span", { class: "task" }, job.task),
      badge(job.state),
      job.tags.length ? h("span", { class: "tags" }, job.tags.map((tag) => h("span", { class: "tag" }, tag))) : null),
    bar,
    h("div", { class: "job-meta" }, h("time", { datetime: job.created_at }, fmtTime(job.created_at)),
      h("span", { class: "actions" }, actions(ctx, job, reload, problem))),
    problem,
  );
  el.progress = bar;
  return el;
}

function filterForm(tasks, onApply) {
  const field = (id, label, input) => h("div", { class: "field" }, h("label", { for: id }, label), input);
  const state = h("select", { id: "filter-state", name: "state" }, h("option", { value: "" }, "any"),
    STATES.map((name) => h("option", { value: name, selected: filters.state === name }, name)));
  const engine = h("select", { id: "filter-engine", name: "engine" }, h("option", { value: "" }, "any"));
  const task = h("input", { id: "filter-task", name: "task", type: "text", value: filters.task, list: "task-names", placeholder: "engine.name" });
  const tag = h("input", { id: "filter-tag", name: "tag", type: "text", value: filters.tag });
  const names = h("datalist", { id: "task-names" });
  tasks.then((list) => {
    const engines = [...new Set(list.map((item) => item.engine))].sort();
    engine.append(...engines.map((name) => h("option", { value: name, selected: filters.engine === name }, name)));
    names.append(...list.map((item) => h("option", { value: item.name })));
  }, () => {});
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter jobs" },
    field("filter-state", "State", state), field("filter-engine", "Engine", engine),
    field("filter-task", "Task", task), field("filter-tag", "Tag", tag), names,
    h("button", { type: "submit" }, "Apply filters"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    Object.assign(filters, { state: state.value, engine: engine.value, task: task.value.trim(), tag: tag.value.trim() });
    onApply();
  });
  return form;
}

export function jobsView(ctx) {
  const list = h("ol", { class: "job-list", "aria-live": "off" });
  const status = h("div", { class: "muted" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const tasks = ctx.api.get("/tasks");
  let cursors = [null]; // the cursor of each page seen; the last is the current page's
  let next = null;
  let alive = true;

  async function load() {
    try {
      const page = await ctx.api.get("/jobs", { ...filters, limit: PAGE_SIZE, cursor: cursors[cursors.length - 1] });
      if (!alive) return;
      next = page.next_cursor;
      list.replaceChildren(...page.items.map((job) => row(ctx, job, reload)));
      status.replaceChildren(page.items.length ? "" : "No jobs match.");
      pager.replaceChildren(
        h("button", { type: "button", disabled: cursors.length === 1, onclick: () => { cursors.pop(); load(); } }, "Newer"),
        h("span", {}, `Page ${cursors.length}`),
        h("button", { type: "button", disabled: !next, onclick: () => { cursors.push(next); load(); } }, "Older"),
      );
    } catch (error) {
      if (alive) status.replaceChildren(errorText(error));
    }
  }
  const reload = throttle(load, 500);

  const el = h("section", { "aria-labelledby": "jobs-title", class: "jobs" },
    h("h1", { id: "jobs-title" }, "Jobs"),
    h("div", { class: "split" },
      h("div", { class: "list-pane" },
        filterForm(tasks, () => { cursors = [null]; load(); }),
        status, list, pager),
      submitForm(ctx, () => { cursors = [null]; load(); })));
  load();

  return {
    el,
    refresh: reload,
    onEvent(event) {
      if (!event.type.startsWith("job.")) return;
      const shown = event.job_id && list.querySelector(`[data-job-id="${event.job_id}"]`);
      const stale = shown && showsBeforeStart(event, shown.dataset.state);
      if (event.type === "job.progress") {
        if (shown) shown.progress.update(event.data);
        if (stale) reload();
        return;
      }
      // A state change: new jobs appear on the first page, states and buttons change on any page.
      if (shown || cursors.length === 1) reload();
      if (stale) setTimeout(reload, START_WRITE_SETTLE_MS);
    },
    destroy() {
      alive = false;
    },
  };
}

function section(title, ...content) {
  return h("section", { class: "card detail-part" }, h("h2", {}, title), ...content);
}

function history(job) {
  return h("ol", { class: "timeline" }, job.history.map((entry) => h("li", { "data-state": entry.state },
    badge(entry.state), " ", h("time", { datetime: entry.at }, fmtTime(entry.at)),
    entry.detail ? h("span", { class: "muted" }, ` ${entry.detail}`) : null,
    entry.error ? h("div", { class: "error" }, `${entry.error.type}: ${entry.error.message}`) : null)));
}

function facts(job) {
  const pairs = [
    ["Task", job.task], ["Engine", job.engine], ["User", job.user_id], ["Priority", job.priority],
    ["Attempts", `${job.attempts} (max retries ${job.max_retries})`], ["Timeout", fmtSeconds(job.timeout_s)],
    ["Created", fmtTime(job.created_at)], ["Queued", fmtTime(job.queued_at)], ["Started", fmtTime(job.started_at)],
    ["Finished", fmtTime(job.finished_at)],
  ];
  if (job.scheduled_at) pairs.push(["Scheduled for", fmtTime(job.scheduled_at)]);
  if (job.position !== null && job.position !== undefined) pairs.push(["Position in queue", job.position]);
  if (job.eta_s !== null && job.eta_s !== undefined) pairs.push(["Starts in about", fmtSeconds(job.eta_s)]);
  if (job.workflow_id) pairs.push(["Workflow", h("a", { href: `#/workflows/${job.workflow_id}` }, job.step_id || job.workflow_id)]);
  if (job.tags.length) pairs.push(["Tags", job.tags.join(", ")]);
  pairs.push(["Usage", `${job.usage.tokens_in} tokens in, ${job.usage.tokens_out} out, $${job.usage.cost_usd.toFixed(4)}`]);
  return h("dl", { class: "facts" }, pairs.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

export function jobDetailView(ctx, jobId) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const el = h("section", { "aria-labelledby": "job-title", class: "job-detail" },
    h("p", {}, h("a", { href: "#/jobs" }, "← All jobs")),
    h("h1", { id: "job-title" }, "Job ", h("span", { class: "mono" }, jobId)), body);
  let bar = null;
  let alive = true;
  const artifacts = artifactsPanel(ctx, jobId);

  function render(job) {
    const problem = h("div");
    bar = progressBar(job.progress, "job progress");
    const parts = [
      h("div", { class: "card detail-head", "data-state": job.state },
        h("div", { class: "row" }, badge(job.state), h("span", { class: "task" }, job.task),
          h("span", { class: "actions" }, actions(ctx, job, render, problem))),
        bar, problem, facts(job)),
      job.error ? section("Error", h("p", { class: "error" }, `${job.error.type}: ${job.error.message}`),
        job.error.traceback ? h("pre", { class: "traceback" }, job.error.traceback) : null) : null,
      artifacts.for(job),
      section("Result", h("pre", {}, job.result === null ? "—" : json(job.result))),
      section("Payload", h("pre", {}, json(job.payload))),
      section("History", history(job)),
    ];
    body.replaceChildren(...parts.filter((part) => part !== null)); // the DOM would show a null as "null"
  }

  async function load() {
    try {
      const job = await ctx.api.get(`/jobs/${jobId}`);
      if (alive) render(job);
    } catch (error) {
      if (alive) body.replaceChildren(errorText(error));
    }
  }
  const reload = throttle(load, 300);
  ctx.client.subscribe([`job:${jobId}`]);
  load();

  return {
    el,
    refresh: reload,
    onEvent(event) {
      if (event.job_id !== jobId) return;
      const stale = showsBeforeStart(event, body.querySelector(".detail-head")?.dataset.state);
      if (event.type === "job.progress") {
        if (bar) bar.update(event.data);
        if (stale) reload();
        return;
      }
      reload();
      if (stale) setTimeout(reload, START_WRITE_SETTLE_MS);
    },
    destroy() {
      alive = false;
      ctx.client.unsubscribe([`job:${jobId}`]);
    },
  };
}
