// Small DOM helpers: elements are built with textContent, never innerHTML, so no server value is ever parsed as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** ``h("button", {class: "x", onclick: fn}, "Label")`` */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** Like ``h`` for SVG elements. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Runs ``fn`` at most once per ``ms``, always once more after the last call (trailing edge). */
export function throttle(fn, ms) {
  let timer = null;
  let last = 0;
  return function throttled() {
    if (timer !== null) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(() => {
      timer = null;
      last = Date.now();
      fn();
    }, wait);
  };
}

/** How long after ``job.started`` a view reads the job again: a worker announces the start before it writes it
 *  (about 0.1 s later, or together with the outcome of a job that quick), so the read made on the event itself
 *  may still say "queued". */
export const START_WRITE_SETTLE_MS = 1000;

/** Whether a view showing a job in ``shownState`` should read it again on ``event``: a start or a progress report
 *  of a job it still shows queued (its copy predates the start's write). */
export function showsBeforeStart(event, shownState) {
  return shownState === "queued" && (event.type === "job.started" || event.type === "job.progress");
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function fmtSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  return `${Math.round(seconds / 60)} min`;
}

export function fmtPercent(ratio) {
  return ratio === null || ratio === undefined ? "—" : `${Math.round(ratio * 100)} %`;
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

/** A labelled progress bar; ``update`` moves it without re-rendering the row. */
export function progressBar(progress, label) {
  const bar = h("div", { class: "bar-fill" });
  const track = h("div", {
    class: "bar",
    role: "progressbar",
    "aria-label": label || "progress",
    "aria-valuemin": 0,
    "aria-valuemax": 100,
  }, bar);
  const text = h("span", { class: "bar-text" });
  const message = h("span", { class: "bar-message" });
  const root = h("div", { class: "progress" }, track, text, message);
  root.update = (next) => {
    const percent = Math.max(0, Math.min(100, Math.round((next && next.percent) || 0)));
    bar.style.width = `${percent}%`;
    track.setAttribute("aria-valuenow", percent);
    text.textContent = `${percent} %`;
    message.textContent = (next && next.message) || "";
  };
  root.update(progress);
  return root;
}

export function badge(state) {
  return h("span", { class: `state state-${state}`, "data-state": state }, state);
}

/** An inline error line for a failed request. */
export function errorText(error) {
  return h("p", { class: "error", role: "alert" }, error && error.message ? error.message : String(error));
}
