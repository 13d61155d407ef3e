// A job's artifacts on its page: images shown, audio and video playable, every file downloadable. Media tags
// cannot send the bearer token, so they load the short-lived signed links the list answers with.

import { errorText, h } from "../dom.js";

function fmtBytes(size) {
  if (size < 1024) return `${size} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = size / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/** The player or preview for one artifact, by its content type; null for other files. */
function preview(item) {
  const type = item.content_type.split(";")[0].trim();
  const label = `${item.name} (${type})`;
  if (type.startsWith("image/")) return h("img", { src: item.url, alt: label, class: "artifact-media", loading: "lazy" });
  if (type.startsWith("audio/")) return h("audio", { src: item.url, controls: true, preload: "metadata", "aria-label": label });
  if (type.startsWith("video/")) {
    return h("video", { src: item.url, controls: true, preload: "metadata", class: "artifact-media", "aria-label": label });
  }
  return null;
}

function card(item) {
  return h("li", { class: "artifact", dataset: { name: item.name } },
    preview(item),
    h("div", { class: "artifact-meta" },
      h("a", { href: item.url, download: item.name, "aria-label": `Download ${item.name}` }, item.name),
      h("span", { class: "muted" }, ` ${fmtBytes(item.size_bytes)} · ${item.content_type} · attempt ${item.attempt}`)),
  );
}

/** Keeps one job's artifacts shown across re-renders of its page: the list (and its media, which would reload)
 *  is fetched again only when the job's artifacts change. */
export function artifactsPanel(ctx, jobId) {
  const el = h("section", { class: "card detail-part artifacts", "aria-labelledby": "artifacts-title" },
    h("h2", { id: "artifacts-title" }, "Artifacts"));
  const list = h("ul", { class: "artifact-list" });
  el.append(list);
  let shownKey = null;

  async function show(job) {
    const key = job.artifacts.map((item) => `${item.name}:${item.sha256}`).join(",");
    if (key === shownKey) return;
    shownKey = key;
    try {
      const answer = await ctx.api.get(`/jobs/${jobId}/artifacts`);
      list.replaceChildren(...answer.items.map(card));
    } catch (error) {
      shownKey = null;
      list.replaceChildren(h("li", {}, errorText(error)));
    }
  }

  return {
    /** The panel for ``job``, or null while it has no artifacts. */
    for(job) {
      if (!job.artifacts || job.artifacts.length === 0) return null;
      show(job);
      return el;
    },
  };
}
