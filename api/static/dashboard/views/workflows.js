// Workflows: the list, and each workflow as a graph of its steps (inline SVG, layered by depends_on).

import { badge, errorText, fmtTime, h, s, throttle } from "../dom.js";

const NODE_W = 150;
const NODE_H = 44;
const GAP_X = 60;
const GAP_Y = 18;
const PAD = 10;

/** Each step's layer: 0 without dependencies, else one more than its deepest dependency. */
function layers(steps) {
  const byId = new Map(steps.map((step) => [step.id, step]));
  const depth = new Map();
  const visit = (step) => {
    if (depth.has(step.id)) return depth.get(step.id);
    depth.set(step.id, 0); // the server refuses cycles; this only guards the recursion
    const deps = step.depends_on.map((id) => byId.get(id)).filter(Boolean);
    const value = deps.length ? 1 + Math.max(...deps.map(visit)) : 0;
    depth.set(step.id, value);
    return value;
  };
  steps.forEach(visit);
  return depth;
}

/** The workflow's DAG: columns are layers, arrows go from a dependency to the step that waits on it. */
export function graph(workflow) {
  const depth = layers(workflow.steps);
  const columns = [];
  for (const step of workflow.steps) (columns[depth.get(step.id)] ||= []).push(step);
  const at = new Map();
  columns.forEach((column, x) => column.forEach((step, y) => at.set(step.id, {
    x: PAD + x * (NODE_W + GAP_X), y: PAD + y * (NODE_H + GAP_Y),
  })));
  const rows = Math.max(...columns.map((column) => column.length));
  const width = PAD * 2 + columns.length * NODE_W + (columns.length - 1) * GAP_X;
  const height = PAD * 2 + rows * NODE_H + (rows - 1) * GAP_Y;
  const edges = workflow.steps.flatMap((step) => step.depends_on.filter((id) => at.has(id)).map((id) => {
    const from = at.get(id);
    const to = at.get(step.id);
    const x1 = from.x + NODE_W;
    const y1 = from.y + NODE_H / 2;
    const x2 = to.x;
    const y2 = to.y + NODE_H / 2;
    const mid = (x1 + x2) / 2;
    return s("path", { class: `edge edge-${step.condition}`, d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 6},${y2}`, "marker-end": `url(#arrow-${workflow.id})` });
  }));
  const nodes = workflow.steps.map((step) => {
    const { x, y } = at.get(step.id);
    const files = step.artifacts || [];
    const count = `${files.length} file${files.length > 1 ? "s" : ""}`;
    const outputs = files.length ? `, ${count}` : "";
    return s("a", { href: `#/jobs/${step.job_id}`, class: "node", "data-step": step.id, "data-step-state": step.state,
      "aria-label": `step ${step.id}: ${step.task}, ${step.state}${outputs}` },
    files.length ? s("title", {}, `outputs: ${files.map((file) => file.name).join(", ")}`) : null,
    s("rect", { x, y, width: NODE_W, height: NODE_H, rx: 6, class: `node-box state-${step.state}` }),
    s("text", { x: x + 8, y: y + 18, class: "node-id" }, step.id),
    // Its outputs: the link opens the step's job page, which shows and plays them
    files.length ? s("text", { x: x + NODE_W - 8, y: y + 18, class: "node-files", "text-anchor": "end" },
      count) : null,
    s("text", { x: x + 8, y: y + 35, class: "node-state" }, `${step.state} · ${step.task}`.slice(0, 26)));
  });
  return s("svg", { class: "dag", viewBox: `0 0 ${width} ${height}`, width, height, role: "group", "aria-label": "workflow steps" },
    s("defs", {}, s("marker", { id: `arrow-${workflow.id}`, viewBox: "0 0 10 10", refX: 5, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))),
    edges, nodes);
}

function counts(workflow) {
  const by = {};
  for (const step of workflow.steps) by[step.state] = (by[step.state] || 0) + 1;
  return Object.entries(by).map(([state, count]) => `${count} ${state}`).join(", ");
}

export function workflowsView(ctx) {
  const list = h("ul", { class: "workflow-list" });
  const status = h("div", { class: "muted" }, "Loading…");
  let alive = true;

  async function load() {
    try {
      const page = await ctx.api.get("/workflows", { limit: 50 });
      if (!alive) return;
      status.replaceChildren(page.items.length ? "" : "No workflows yet (POST /workflows makes one).");
      list.replaceChildren(...page.items.map((workflow) => h("li", { class: "card", "data-workflow-id": workflow.id },
        h("div", { class: "row" }, h("a", { href: `#/workflows/${workflow.id}` }, workflow.name || workflow.id), badge(workflow.state),
          h("span", { class: "muted" }, `${workflow.steps.length} steps: ${counts(workflow)}`),
          h("time", { datetime: workflow.created_at }, fmtTime(workflow.created_at))),
        h("div", { class: "graph-scroll" }, graph(workflow)))));
    } catch (error) {
      if (alive) status.replaceChildren(errorText(error));
    }
  }
  const reload = throttle(load, 1000);
  load();
  return {
    el: h("section", { "aria-labelledby": "workflows-title" }, h("h1", { id: "workflows-title" }, "Workflows"), status, list),
    refresh: reload,
    onEvent(event) {
      if (event.workflow_id) reload();
    },
    destroy() {
      alive = false;
    },
  };
}

export function workflowDetailView(ctx, workflowId) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  let alive = true;

  async function load() {
    try {
      const workflow = await ctx.api.get(`/workflows/${workflowId}`);
      if (!alive) return;
      const problem = h("div");
      const cancel = workflow.state === "running"
        ? h("button", { type: "button", class: "danger", onclick: async () => {
          try {
            await ctx.api.post(`/workflows/${workflowId}/cancel`);
            load();
          } catch (error) {
            problem.replaceChildren(errorText(error));
          }
        } }, "Cancel workflow")
        : null;
      body.replaceChildren(
        h("div", { class: "card", "data-workflow-state": workflow.state },
          h("div", { class: "row" }, h("strong", {}, workflow.name || "(unnamed)"), badge(workflow.state),
            h("span", { class: "muted" }, counts(workflow)), cancel),
          problem,
          h("div", { class: "graph-scroll" }, graph(workflow)),
          h("p", { class: "muted" }, "Select a step to open its job.")));
    } catch (error) {
      if (alive) body.replaceChildren(errorText(error));
    }
  }
  const reload = throttle(load, 300);
  ctx.client.subscribe([`workflow:${workflowId}`]);
  load();
  return {
    el: h("section", { "aria-labelledby": "workflow-title" },
      h("p", {}, h("a", { href: "#/workflows" }, "← All workflows")),
      h("h1", { id: "workflow-title" }, "Workflow ", h("span", { class: "mono" }, workflowId)), body),
    refresh: reload,
    onEvent(event) {
      if (event.workflow_id === workflowId) reload();
    },
    destroy() {
      alive = false;
      ctx.client.unsubscribe([`workflow:${workflowId}`]);
    },
  };
}
