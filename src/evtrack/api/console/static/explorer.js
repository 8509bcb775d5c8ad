// The series explorer: draws a metric from min/max buckets (/api/2.0/evtrack/metrics/buckets),
// one bucket per device pixel of the plot, so every spike stays visible however long the
// series. Each zoom redraws the data it has at once, then fetches the window again; once the
// window holds no more points than the plot is wide, the server sends the raw points.
import { count } from "./live.js";

const canvas = document.getElementById("chart");
const readout = document.getElementById("readout");
const form = document.getElementById("window");
const startInput = document.getElementById("start");
const endInput = document.getElementById("end");
const ctx = canvas.getContext("2d");

const FIRST = Number(canvas.dataset.firstStep);
const LAST = Number(canvas.dataset.lastStep);
const PAD = { left: 64, right: 16, top: 14, bottom: 30 }; // CSS pixels
const FETCH_DELAY_MS = 60;

let view = { lo: FIRST, hi: LAST }; // the steps shown (inclusive)
let data = null; // the last answer drawn
let pending = null; // AbortController of the fetch in flight
let timer = null;
let drag = null; // { x0, x1 } in CSS pixels while selecting
let hover = null;

function colors() {
  const style = getComputedStyle(document.documentElement);
  const get = (name) => style.getPropertyValue(name).trim();
  return {
    text: get("--muted"),
    grid: get("--plot-grid"),
    line: get("--plot-line"),
    band: get("--plot-band"),
    panel: get("--panel"),
    accent: get("--accent"),
  };
}

function size() {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  return { ratio, width, height, plotWidth: Math.max(10, width - PAD.left - PAD.right) };
}

function bucketsWanted() {
  const { ratio, plotWidth } = size();
  return Math.max(10, Math.min(10000, Math.floor(plotWidth * ratio)));
}

function clampView(lo, hi) {
  const span = LAST - FIRST;
  let width = Math.max(hi - lo, Math.min(span, 1));
  if (width > span) width = span;
  lo = Math.max(FIRST, Math.min(lo, LAST - width));
  return { lo: Math.round(lo), hi: Math.round(lo + width) };
}

function valueRange(answer) {
  let low = Infinity;
  let high = -Infinity;
  if (answer.mode === "buckets") {
    for (const v of answer.buckets.min) if (v !== null && v < low) low = v;
    for (const v of answer.buckets.max) if (v !== null && v > high) high = v;
  } else {
    for (const v of answer.points.values) {
      if (v === null) continue;
      if (v < low) low = v;
      if (v > high) high = v;
    }
  }
  if (low === Infinity) return { low: 0, high: 1 };
  if (low === high) return { low: low - 1, high: high + 1 };
  const pad = (high - low) * 0.04;
  return { low: low - pad, high: high + pad };
}

function ticks(low, high, wanted) {
  const span = high - low;
  if (!(span > 0)) return [low];
  const raw = span / wanted;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || raw;
  const out = [];
  for (let t = Math.ceil(low / step) * step; t <= high + step * 1e-9; t += step) out.push(t);
  return out;
}

function label(value) {
  const a = Math.abs(value);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return value.toExponential(2);
  return Number(value.toPrecision(6)).toLocaleString("en-US");
}

function draw() {
  const started = performance.now();
  const { ratio, width, height, plotWidth } = size();
  const plotHeight = Math.max(10, height - PAD.top - PAD.bottom);
  const c = colors();
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = c.panel;
  ctx.fillRect(0, 0, width, height);
  if (!data) return;
  const { low, high } = valueRange(data);
  const span = Math.max(view.hi - view.lo, 1e-9);
  const x = (step) => PAD.left + ((step - view.lo) / span) * plotWidth;
  const y = (value) => PAD.top + (1 - (value - low) / (high - low)) * plotHeight;

  ctx.font = "12px system-ui, sans-serif";
  ctx.strokeStyle = c.grid;
  ctx.fillStyle = c.text;
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const t of ticks(low, high, 5)) {
    const yy = Math.round(y(t)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(PAD.left, yy);
    ctx.lineTo(PAD.left + plotWidth, yy);
    ctx.stroke();
    ctx.fillText(label(t), PAD.left - 6, yy);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const t of ticks(view.lo, view.hi, 6)) {
    const xx = Math.round(x(t)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(xx, PAD.top);
    ctx.lineTo(xx, PAD.top + plotHeight);
    ctx.stroke();
    ctx.fillText(label(t), xx, PAD.top + plotHeight + 6);
  }

  ctx.save();
  ctx.beginPath();
  ctx.rect(PAD.left, PAD.top, plotWidth, plotHeight);
  ctx.clip();
  let drawn = 0;
  let top = null; // the highest value drawn, and where
  const pixel = 1 / ratio; // one device pixel, in CSS pixels
  if (data.mode === "buckets") {
    const b = data.buckets;
    ctx.fillStyle = c.line;
    for (let i = 0; i < b.count.length; i += 1) {
      if (b.min[i] === null) continue;
      const x0 = x(b.first_step[i]);
      const x1 = x(b.last_step[i]);
      if (x1 < PAD.left - 1 || x0 > PAD.left + plotWidth + 1) continue;
      const yTop = y(b.max[i]);
      const yBottom = y(b.min[i]);
      // Every bucket is at least one device pixel wide and tall: a lone spike shows.
      ctx.fillRect(x0, yTop, Math.max(pixel, x1 - x0), Math.max(pixel, yBottom - yTop));
      drawn += 1;
      if (top === null || b.max[i] > top.value) top = { value: b.max[i], step: b.max_step[i] };
    }
  } else {
    const steps = data.points.steps;
    const values = data.points.values;
    ctx.strokeStyle = c.line;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let open = false;
    for (let i = 0; i < steps.length; i += 1) {
      if (values[i] === null) {
        open = false;
        continue;
      }
      const xx = x(steps[i]);
      const yy = y(values[i]);
      if (open) ctx.lineTo(xx, yy);
      else ctx.moveTo(xx, yy);
      open = true;
      drawn += 1;
      if (top === null || values[i] > top.value) top = { value: values[i], step: steps[i] };
    }
    ctx.stroke();
    if (steps.length <= plotWidth / 4) {
      ctx.fillStyle = c.line;
      for (let i = 0; i < steps.length; i += 1) {
        if (values[i] === null) continue;
        ctx.beginPath();
        ctx.arc(x(steps[i]), y(values[i]), 2.5, 0, Math.PI * 2);
        ctx.fill();
      }
    }
  }
  if (drag) {
    ctx.fillStyle = c.band;
    ctx.fillRect(Math.min(drag.x0, drag.x1), PAD.top, Math.abs(drag.x1 - drag.x0), plotHeight);
  }
  if (hover !== null) {
    ctx.strokeStyle = c.accent;
    ctx.beginPath();
    ctx.moveTo(hover + 0.5, PAD.top);
    ctx.lineTo(hover + 0.5, PAD.top + plotHeight);
    ctx.stroke();
  }
  ctx.restore();
  const ms = performance.now() - started;
  canvas.dataset.drawMs = ms.toFixed(1);
  canvas.dataset.drawn = String(drawn);
  canvas.dataset.maxValue = top === null ? "" : String(top.value);
  canvas.dataset.maxStep = top === null ? "" : String(top.step);
  // Where the plot sits on the canvas (CSS pixels), for whoever probes its pixels.
  canvas.dataset.plot = [PAD.left, PAD.top, plotWidth, plotHeight].join(",");
}

function describe(answer) {
  const w = answer.window;
  if (!w) return "This metric has no points.";
  const what =
    answer.mode === "buckets"
      ? `${count(w.points)} points as ${count(answer.buckets.count.length)} min/max buckets`
      : `${count(w.points)} raw points`;
  const top = canvas.dataset.maxValue ? `; highest ${label(Number(canvas.dataset.maxValue))} at step ${count(Number(canvas.dataset.maxStep))}` : "";
  return `Steps ${count(w.start_step)} to ${count(w.end_step)}: ${what}${top}.`;
}

async function load() {
  if (pending) pending.abort();
  const controller = new AbortController();
  pending = controller;
  const started = performance.now();
  canvas.dataset.state = "loading";
  const wanted = bucketsWanted();
  const url = new URL("/api/2.0/evtrack/metrics/buckets", location.href);
  url.searchParams.set("run_id", canvas.dataset.run);
  url.searchParams.set("key", canvas.dataset.key);
  url.searchParams.set("start_step", String(view.lo));
  url.searchParams.set("end_step", String(view.hi));
  url.searchParams.set("buckets", String(wanted));
  url.searchParams.set("raw_limit", String(wanted));
  let answer;
  try {
    const response = await fetch(url, { signal: controller.signal, credentials: "same-origin" });
    answer = await response.json();
    if (!response.ok) throw new Error(answer.message || `HTTP ${response.status}`);
  } catch (error) {
    if (error.name === "AbortError") return;
    canvas.dataset.state = "error";
    readout.textContent = `Could not load the window: ${error.message}`;
    return;
  }
  if (pending !== controller) return;
  pending = null;
  const fetched = performance.now();
  data = answer;
  draw();
  const done = performance.now();
  canvas.dataset.fetchMs = (fetched - started).toFixed(1);
  canvas.dataset.totalMs = (done - started).toFixed(1);
  canvas.dataset.mode = answer.mode;
  canvas.dataset.points = String(answer.window ? answer.window.points : 0);
  canvas.dataset.windowStart = String(view.lo);
  canvas.dataset.windowEnd = String(view.hi);
  canvas.dataset.drawnAt = done.toFixed(1); // performance.now() of this page
  canvas.dataset.state = "drawn";
  startInput.value = String(view.lo);
  endInput.value = String(view.hi);
  readout.textContent = describe(answer);
}

function show(lo, hi, immediately = false) {
  view = clampView(lo, hi);
  draw(); // at once, from what is loaded; the fetch below refines it
  clearTimeout(timer);
  if (immediately) load();
  else timer = setTimeout(load, FETCH_DELAY_MS);
}

function zoom(factor, center) {
  const mid = center === undefined ? (view.lo + view.hi) / 2 : center;
  show(mid - (mid - view.lo) * factor, mid + (view.hi - mid) * factor);
}

function pan(fraction) {
  const shift = (view.hi - view.lo) * fraction;
  show(view.lo + shift, view.hi + shift);
}

function stepAt(clientX) {
  const { plotWidth } = size();
  const rect = canvas.getBoundingClientRect();
  const offset = Math.min(Math.max(clientX - rect.left - PAD.left, 0), plotWidth);
  return { x: offset + PAD.left, step: view.lo + (offset / plotWidth) * (view.hi - view.lo) };
}

canvas.addEventListener("wheel", (event) => {
  event.preventDefault();
  zoom(event.deltaY < 0 ? 0.8 : 1.25, stepAt(event.clientX).step);
}, { passive: false });

canvas.addEventListener("pointerdown", (event) => {
  canvas.setPointerCapture(event.pointerId);
  const at = stepAt(event.clientX);
  drag = { x0: at.x, x1: at.x, s0: at.step, s1: at.step };
});
canvas.addEventListener("pointermove", (event) => {
  const at = stepAt(event.clientX);
  if (drag) {
    drag.x1 = at.x;
    drag.s1 = at.step;
  } else {
    hover = at.x;
  }
  draw();
});
canvas.addEventListener("pointerleave", () => {
  hover = null;
  if (!drag) draw();
});
canvas.addEventListener("pointerup", () => {
  const done = drag;
  drag = null;
  if (done && Math.abs(done.x1 - done.x0) > 4) {
    show(Math.min(done.s0, done.s1), Math.max(done.s0, done.s1), true);
  } else {
    draw();
  }
});

canvas.addEventListener("keydown", (event) => {
  const actions = {
    "+": () => zoom(0.5),
    "=": () => zoom(0.5),
    "-": () => zoom(2),
    _: () => zoom(2),
    ArrowLeft: () => pan(-0.25),
    ArrowRight: () => pan(0.25),
    "0": () => show(FIRST, LAST, true),
    Home: () => show(FIRST, LAST, true),
  };
  const action = actions[event.key];
  if (action) {
    event.preventDefault();
    action();
  }
});

for (const button of document.querySelectorAll("[data-zoom]")) {
  button.addEventListener("click", () => {
    const kind = button.dataset.zoom;
    if (kind === "in") zoom(0.5);
    else if (kind === "out") zoom(2);
    else if (kind === "left") pan(-0.25);
    else if (kind === "right") pan(0.25);
    else show(FIRST, LAST, true);
  });
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const lo = Number(startInput.value);
  const hi = Number(endInput.value);
  if (Number.isFinite(lo) && Number.isFinite(hi) && lo <= hi) show(lo, hi, true);
});

new ResizeObserver(() => {
  draw();
  clearTimeout(timer);
  timer = setTimeout(load, 150);
}).observe(canvas);
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", draw);

// The explorer's programmatic face, for tests and benchmarks: show a window and wait for it.
canvas.explore = (lo, hi) =>
  new Promise((resolve) => {
    show(lo, hi, true);
    const check = () => (canvas.dataset.state === "drawn" && !pending ? resolve({ ...canvas.dataset }) : setTimeout(check, 10));
    setTimeout(check, 0);
  });

load();
