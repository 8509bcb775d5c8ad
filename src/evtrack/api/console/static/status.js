// The status page, kept live: one snapshot a second from /api/2.0/evtrack/status/stream.
// The page says how old its figures are and marks itself stale past two seconds.
import { count, follow, h, rate, utc } from "./live.js";

const STALE_AFTER_S = 2;
const main = document.getElementById("main");
const freshness = document.getElementById("freshness");
const age = document.getElementById("age");
let receivedAt = performance.now();
let connection = "connecting";

function setField(name, content) {
  for (const node of document.querySelectorAll(`[data-field="${name}"]`)) {
    node.replaceChildren(content);
  }
}

function health(ok) {
  const label = ok === null || ok === undefined ? "unknown" : ok ? "ok" : "failing";
  return h("span", { class: `health health-${label}` }, label);
}

function size(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  let amount = bytes;
  for (const unit of ["B", "KB", "MB", "GB", "TB"]) {
    if (amount < 1024 || unit === "TB") return `${rate(amount)} ${unit}`;
    amount /= 1024;
  }
  return "";
}

function artifactDetail(a) {
  if (a.error) return a.error;
  if (a.kind === "local") return `${size(a.free_bytes)} free at ${a.location}`;
  return `${a.location || a.kind || ""}, ${Math.round(a.latency_ms || 0)} ms`;
}

function readModelRow(m, parked) {
  return h(
    "tr",
    { "data-read-model": m.name, "data-state": m.state, class: `rm-${m.state}` },
    h("th", { scope: "row" }, m.name),
    h("td", { class: "num" }, (m.at_least ? "≥ " : "") + count(m.behind)),
    h("td", { class: "num" }, m.stalled_s ? `${rate(m.stalled_s)} s` : "—"),
    h("td", {}, h("span", { class: `state state-${m.state}` }, m.state)),
    h("td", { class: "num" }, String(parked[m.name] || 0)),
  );
}

function errorItems(s) {
  const items = s.errors.map((e) =>
    h("li", {}, utc(e.at), " ", h("strong", {}, e.source), ": ", e.message,
      e.request_id ? ` (request ${e.request_id})` : ""),
  );
  for (const p of s.parked.recent) {
    items.push(
      h("li", {}, utc(p.parked_at), " ", h("strong", {}, `parked in ${p.read_model}`),
        `: ${p.event_type} at ${p.position} (${p.stream_id}): ${p.error}`),
    );
  }
  return items.length ? items : [h("li", { class: "empty" }, "No errors recorded.")];
}

function render(s) {
  main.dataset.sequence = s.sequence;
  main.dataset.generatedAt = s.generated_at;
  setField("sequence", String(s.sequence));
  const taken = freshness.querySelector("time");
  if (taken) taken.replaceWith(utc(s.generated_at));
  setField("ingest.points_per_s", rate(s.ingest.points_per_s));
  setField("ingest.events_per_s", rate(s.ingest.events_per_s));
  setField("ingest.window_s", (s.ingest.window_s || 0).toFixed(1));
  setField("database.ok", health(s.database.ok));
  setField("database.latency_ms", s.database.latency_ms === null ? "—" : s.database.latency_ms.toFixed(2));
  setField("artifacts.ok", health(s.artifacts.ok));
  setField("artifacts.detail", artifactDetail(s.artifacts));
  setField("parked.total", String(s.parked.total || 0));
  const ready = document.getElementById("ready");
  ready.className = s.ready ? "ready" : "not-ready";
  ready.textContent = s.ready ? "Ready" : "Not ready: a read model lags";
  document
    .querySelector("#read-models tbody")
    .replaceChildren(...s.read_models.map((m) => readModelRow(m, s.parked.by_read_model)));
  document.getElementById("errors").replaceChildren(...errorItems(s));
}

function tick() {
  const seconds = (performance.now() - receivedAt) / 1000;
  const stale = seconds > STALE_AFTER_S;
  age.textContent = ` (${seconds.toFixed(1)} s ago${connection === "live" ? "" : `, ${connection}`})`;
  freshness.classList.toggle("stale", stale);
  main.dataset.stale = stale ? "true" : "false";
}

follow("/api/2.0/evtrack/status/stream", {
  names: ["status"],
  onEvent: (_name, snapshot) => {
    render(snapshot);
    receivedAt = performance.now();
  },
  onState: (text) => {
    connection = text;
  },
});
setInterval(tick, 250);
tick();
