// The submit form, built from GET /tasks: one input per simple payload field, JSON for the rest.

import { errorText, h, json } from "../dom.js";

/** A field's input kind from its JSON schema: number, integer, boolean, a choice, text, or JSON. */
function kindOf(schema) {
  const options = schema.anyOf || schema.oneOf;
  if (options) {
    const choice = options.find((option) => option.enum);
    if (choice && options.every((option) => option.enum || option.type === "null")) {
      return { kind: "choice", values: choice.enum, nullable: options.some((option) => option.type === "null") };
    }
    return { kind: "json" };
  }
  if (schema.enum) return { kind: "choice", values: schema.enum, nullable: false };
  if (["number", "integer", "boolean", "string"].includes(schema.type)) return { kind: schema.type };
  return { kind: "json" };
}

function fieldInput(name, schema, required) {
  const id = `payload-${name}`;
  const { kind, values, nullable } = kindOf(schema);
  const initial = schema.default;
  let input;
  if (kind === "choice") {
    input = h(
      "select",
      { id, name },
      nullable ? h("option", { value: "" }, "(none)") : null,
      values.map((value) => h("option", { value, selected: value === initial }, value)),
    );
  } else if (kind === "boolean") {
    input = h("input", { id, name, type: "checkbox", checked: initial === true });
  } else if (kind === "number" || kind === "integer") {
    input = h("input", { id, name, type: "number", step: kind === "integer" ? 1 : "any", value: initial ?? "", required });
  } else if (kind === "string") {
    input = h("input", { id, name, type: "text", value: initial ?? "", required });
  } else {
    input = h("textarea", { id, name, rows: 2, class: "mono" });
    input.value = initial === undefined ? "" : json(initial);
  }
  const title = schema.title || name;
  const read = () => {
    if (kind === "boolean") return input.checked;
    if (input.value === "") return undefined;
    if (kind === "number" || kind === "integer") return Number(input.value);
    if (kind === "json") {
      try {
        return JSON.parse(input.value);
      } catch (error) {
        throw new Error(`${title}: not valid JSON`);
      }
    }
    return input.value;
  };
  const label = h("label", { for: id }, title, required ? " *" : "");
  const help = schema.description ? h("small", { class: "muted" }, schema.description) : null;
  return { el: h("div", { class: "field" }, label, input, help), read };
}

function defaultsOf(schema) {
  const payload = {};
  for (const [name, field] of Object.entries(schema.properties || {})) {
    if (field.default !== undefined) payload[name] = field.default;
  }
  return payload;
}

/** ``onSubmitted(job)`` is called with the accepted job. */
export function submitForm(ctx, onSubmitted) {
  const select = h("select", { id: "submit-task", name: "task", required: true });
  const fields = h("div", { class: "fields" });
  const priority = h("select", { id: "submit-priority", name: "priority" },
    ["low", "normal", "high", "critical"].map((name) => h("option", { value: name, selected: name === "normal" }, name)));
  const tags = h("input", { id: "submit-tags", name: "tags", type: "text", placeholder: "comma, separated" });
  const asJson = h("input", { id: "submit-as-json", type: "checkbox" });
  const raw = h("textarea", { id: "submit-json", rows: 8, class: "mono", "aria-describedby": "submit-json-help" });
  const rawField = h("div", { class: "field", hidden: true },
    h("label", { for: "submit-json" }, "Payload (JSON)"), raw,
    h("small", { id: "submit-json-help", class: "muted" }, "Prefilled with the task's defaults."));
  const problem = h("div", { "aria-live": "polite" });
  let tasks = [];
  let readers = [];

  function showTask() {
    const task = tasks.find((candidate) => candidate.name === select.value);
    if (!task) return;
    const schema = task.payload_schema || {};
    const required = new Set(schema.required || []);
    const built = Object.entries(schema.properties || {}).map(([name, field]) => ({ name, ...fieldInput(name, field, required.has(name)) }));
    readers = built;
    fields.replaceChildren(
      task.description ? h("p", { class: "muted" }, task.description) : null,
      ...built.map((field) => field.el),
    );
    raw.value = json(defaultsOf(schema));
    if (!built.length) asJson.checked = true;
    toggleJson();
  }

  function toggleJson() {
    fields.hidden = asJson.checked;
    rawField.hidden = !asJson.checked;
  }

  function payload() {
    if (!asJson.checked) return readFields();
    try {
      return JSON.parse(raw.value || "{}");
    } catch (error) {
      throw new Error("Payload: not valid JSON");
    }
  }

  function readFields() {
    const result = {};
    for (const field of readers) {
      const value = field.read();
      if (value !== undefined) result[field.name] = value;
    }
    return result;
  }

  const form = h(
    "form",
    { class: "card submit", "aria-labelledby": "submit-title" },
    h("h2", { id: "submit-title" }, "Submit a job"),
    h("div", { class: "field" }, h("label", { for: "submit-task" }, "Task"), select),
    fields,
    rawField,
    h("div", { class: "row" },
      h("div", { class: "field" }, h("label", { for: "submit-priority" }, "Priority"), priority),
      h("div", { class: "field" }, h("label", { for: "submit-tags" }, "Tags"), tags),
      h("div", { class: "field checkbox" }, asJson, h("label", { for: "submit-as-json" }, "Edit payload as JSON"))),
    h("button", { type: "submit", class: "primary" }, "Submit job"),
    problem,
  );
  select.addEventListener("change", showTask);
  asJson.addEventListener("change", () => {
    if (asJson.checked) {
      try {
        raw.value = json(readFields()); // carry over what was typed into the inputs
      } catch (error) {
        console.info("engineroom: kept the default payload:", error.message);
      }
    }
    toggleJson();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    try {
      const body = {
        task: select.value,
        payload: payload(),
        priority: priority.value,
        tags: tags.value.split(",").map((tag) => tag.trim()).filter(Boolean),
      };
      const job = await ctx.api.post("/jobs", body);
      problem.replaceChildren(h("p", { class: "ok" }, "Submitted ", h("a", { href: `#/jobs/${job.id}` }, job.id)));
      onSubmitted(job);
    } catch (error) {
      problem.replaceChildren(errorText(error));
    }
  });

  ctx.api.get("/tasks").then(
    (list) => {
      tasks = list;
      select.replaceChildren(...list.map((task) => h("option", { value: task.name }, task.name)));
      showTask();
    },
    (error) => problem.replaceChildren(errorText(error)),
  );
  return form;
}
