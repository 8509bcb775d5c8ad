// The live feed: follows the event stream from where the server-rendered page ended, with
// the page's filters, and puts each new event at the top.
import { follow, h } from "./live.js";

const MAX_ROWS = 500;
const HIDDEN = new Set(["model_key"]); // as the server-rendered rows (console/_feed.py)
const main = document.getElementById("main");
const body = document.querySelector("#feed tbody");
const status = document.getElementById("feed-status");
const types = [...document.querySelectorAll("#types option")].map((o) => o.value).filter(Boolean);

function summary(change) {
  const parts = [];
  for (const [key, value] of Object.entries(change)) {
    if (HIDDEN.has(key) || value === null || value === false || value === "") continue;
    if (Array.isArray(value) && !value.length) continue;
    if (typeof value === "object" && !Array.isArray(value) && !Object.keys(value).length) continue;
    parts.push(`${key}=${typeof value === "string" ? value : JSON.stringify(value)}`);
  }
  const line = parts.join(" ");
  return line.length <= 240 ? line : `${line.slice(0, 239)}…`;
}

function exploreLinks(entry) {
  const metrics = entry.change.metrics;
  if (entry.type !== "RunDataLogged" || !metrics || !entry.change.run_id) return [];
  return (metrics.keys || []).slice(0, 3).map((key) => {
    const url = new URL("/console/explorer", location.href);
    url.searchParams.set("run_id", entry.change.run_id);
    url.searchParams.set("key", key);
    return h("a", { class: "explore", href: url.pathname + url.search }, `explore ${key}`);
  });
}

function row(entry) {
  return h(
    "tr",
    { "data-type": entry.type, "data-stream": entry.stream_id, "data-position": entry.position, class: "fresh" },
    h("td", {}, h("time", { datetime: entry.recorded_at }, entry.recorded_at.slice(11, 23))),
    h("td", {}, h("code", {}, entry.type)),
    h("td", { class: "stream" }, entry.stream_id),
    h("td", {}, entry.actor),
    h("td", { class: "summary" }, summary(entry.change), " ", ...exploreLinks(entry)),
  );
}

let received = 0;
const url = new URL(main.dataset.stream, location.href);
url.searchParams.set("after", main.dataset.after);
follow(url, {
  names: types,
  onEvent: (_name, entry) => {
    body.prepend(row(entry));
    while (body.rows.length > MAX_ROWS) body.lastElementChild.remove();
    received += 1;
    main.dataset.received = String(received);
  },
  onState: (state) => {
    status.textContent = state === "live" ? "Live: new events appear at the top." : `Stream ${state}…`;
    main.dataset.connection = state;
  },
});
