// connectome serve page: the job table is polled every 2 s; the selected job's curve
// comes from GET /api/jobs/{id} once, then one point per server-sent `step` event.
"use strict";

const $ = (sel) => document.querySelector(sel);
const FINAL = new Set(["done", "failed", "cancelled"]);

let selected = null;     // id of the job shown under the table
let pinned = false;      // the user chose it (click or #job=ID): polling no longer moves the selection
let job = null;          // GET /api/jobs/{selected}, summary kept current by `state` events
let points = new Map();  // step -> Point; keyed by step because the stream may resend from step 0
let source = null;       // EventSource of the selected job while it can still change

// ---- formatting

const count = (n) => n == null ? "–" : n.toLocaleString("en-US");
const short = (n) => Math.abs(n) >= 1e6 ? +(n / 1e6).toFixed(2) + "M"
  : Math.abs(n) >= 1e3 ? +(n / 1e3).toFixed(1) + "k" : String(n);
const fixed = (x, d) => x == null ? "–" : x.toFixed(d);
function duration(s) {
  if (s == null) return "–";
  s = Math.round(s);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
}
function bytes(n) {
  for (const unit of ["B", "kB", "MB", "GB"]) {
    if (n < 1024 || unit === "GB") return `${unit === "B" ? n : n.toFixed(1)} ${unit}`;
    n /= 1024;
  }
}
function removed(j) {
  if (j.removed == null && j.target == null) return j.remove ?? "–";
  const pct = j.target ? ` (${Math.floor(100 * (j.removed ?? 0) / j.target)}%)` : "";
  return `${count(j.removed)} / ${count(j.target)}${pct}`;
}
// Build an element: el("td", {class: "x"}, "text", child, ...).
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}
const badge = (state) => el("span", {class: `state ${state}`}, state);

async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

// ---- job table

async function poll() {
  let jobs;
  try {
    jobs = (await getJSON("/api/jobs")).jobs;
  } catch (e) {
    $("#summary").textContent = `server unreachable (${e.message})`;
    return;
  }
  const n = (s) => jobs.filter((j) => j.state === s).length;
  $("#summary").textContent =
    `${n("running")} running · ${n("queued")} queued · ${jobs.length} job${jobs.length === 1 ? "" : "s"}`;

  const rows = jobs.map((j) => {
    const tr = el("tr", {"data-job-id": j.id, "data-state": j.state},
      el("td", {}, `#${j.id}`), el("td", {}, badge(j.state)), el("td", {}, j.model ?? "–"),
      el("td", {}, removed(j)), el("td", {}, fixed(j.top1, 2)), el("td", {}, fixed(j.loss, 4)),
      el("td", {}, duration(j.elapsed)), el("td", {}, FINAL.has(j.state) ? "–" : duration(j.eta)));
    if (j.id === selected) tr.classList.add("selected");
    tr.onclick = () => { location.hash = `job=${j.id}`; };  // hashchange does the selecting
    return tr;
  });
  if (!rows.length) rows.push(el("tr", {class: "empty"}, el("td", {colspan: 8}, "no jobs yet")));
  $("#jobs tbody").replaceChildren(...rows);

  if (!pinned) {  // default: the first running job, else the newest (the list is newest first)
    const first = jobs.find((j) => j.state === "running") ?? jobs[0];
    if (first && first.id !== selected) select(first.id);
  }
  // A job that ended while its stream was down (or before it opened) is reloaded for its files.
  const listed = jobs.find((j) => j.id === selected);
  if (job && listed && job.id === listed.id && FINAL.has(listed.state) && !FINAL.has(job.state)) load(selected);
}

// ---- selected job

function select(id) {
  if (source) source.close();
  source = null;
  selected = id;
  job = null;
  points = new Map();
  plot();  // the previous job's curve must not linger while this one loads
  for (const tr of document.querySelectorAll("#jobs tbody tr"))
    tr.classList.toggle("selected", tr.dataset.jobId === String(id));
  load(id);
}

async function load(id) {
  let j;
  try {
    j = await getJSON(`/api/jobs/${id}`);
  } catch (e) {
    if (id !== selected) return;
    $("#detail").hidden = false;
    $("#title").textContent = `job #${id}: ${e.message}`;
    $("#error").hidden = true;
    $("#files").replaceChildren();
    return;
  }
  if (id !== selected) return;  // the user moved on while this was loading
  job = j;
  for (const p of j.points ?? []) points.set(p.step, p);
  showJob();
  plot();
  if (!FINAL.has(j.state) && !source) listen(id);
}

function listen(id) {
  // EventSource reconnects by itself (sending Last-Event-ID); we close it only on `end`.
  source = new EventSource(`/api/jobs/${id}/events`);
  source.addEventListener("step", (e) => {
    const p = JSON.parse(e.data);
    points.set(p.step, p);
    plot();
  });
  source.addEventListener("state", (e) => {
    job = {...job, ...JSON.parse(e.data)};  // keeps points and files, which state events lack
    showJob();
  });
  source.addEventListener("end", () => {
    source.close();
    source = null;
    load(id);  // the files exist only now
  });
}

function showJob() {
  const j = job;
  $("#detail").hidden = false;
  const what = [j.model, j.remove && `remove ${j.remove}`].filter(Boolean).join(", ");
  $("#title").replaceChildren(`job #${j.id} `, badge(j.state), ` ${what}`);
  $("#error").hidden = !j.error;
  $("#error").textContent = j.error ?? "";
  const files = (j.files ?? []).map((f) =>
    el("li", {}, el("a", {href: f.url, download: f.name}, f.name), " ",
      el("span", {class: "muted"}, bytes(f.size))));
  if (!files.length && !FINAL.has(j.state)) files.push(el("li", {class: "muted"}, "files appear when the job is done"));
  if (j.started) files.push(el("li", {}, el("a", {href: `/api/jobs/${j.id}/log`}, "worker log")));
  $("#files").replaceChildren(...files);
}

// ---- chart: top-1 (left axis) and loss (right axis) against weights removed

const COLOURS = {top1: "#1f77b4", loss: "#ff7f0e", eval: "#2a9d3a"};

// Tick labels with as many decimals as the tick spacing has: uPlot's default stops at 3
// (Intl's), which prints close losses such as 0.3025 and 0.3030 alike.
function ticks(u, vals, axis, space, incr) {
  const d = (String(+incr.toPrecision(6)).split(".")[1] ?? "").length;
  return vals.map((v) => v == null ? "" : v.toFixed(d));
}

// Axis as wide as its longest tick label (uPlot's "axis autosize" recipe), so 0.3025 fits.
function axisSize(u, values, axis, cycle) {
  const a = u.axes[axis];
  if (cycle > 1) return a._size;  // uPlot re-asks until the size settles; stop it oscillating
  const longest = (values ?? []).reduce((l, v) => v.length > l.length ? v : l, "");
  u.ctx.font = a.font[0];
  return Math.ceil(a.ticks.size + a.gap + u.ctx.measureText(longest).width / devicePixelRatio);
}

function chartWidth() {
  return Math.max(300, $("#chart").clientWidth - 10);
}
// The chart is made while hidden (0 wide): size it whenever it may have become visible.
function fit() {
  if (!$("#chart").hidden && chart.width !== chartWidth()) chart.setSize({width: chartWidth(), height: 320});
}

const chart = new uPlot({
  width: chartWidth(),
  height: 320,
  scales: {x: {time: false}},
  series: [
    {label: "removed", value: (u, v) => count(v)},
    {label: "top-1 (acceptance) %", scale: "%", stroke: COLOURS.top1, width: 2, value: (u, v) => fixed(v, 2)},
    {label: "loss", scale: "loss", stroke: COLOURS.loss, width: 2, value: (u, v) => fixed(v, 4)},
    // Evaluation runs only every few steps: dots, no line.
    {label: "top-1 (evaluation) %", scale: "%", stroke: COLOURS.eval, fill: COLOURS.eval,
      paths: () => null, points: {show: true, size: 7, fill: COLOURS.eval}, value: (u, v) => fixed(v, 2)},
  ],
  axes: [
    {label: "weights removed", values: (u, vals) => vals.map(short)},
    {scale: "%", label: "top-1 %", stroke: COLOURS.top1, values: ticks, size: axisSize},
    {scale: "loss", label: "loss", side: 1, grid: {show: false}, stroke: COLOURS.loss, values: ticks, size: axisSize},
  ],
}, [[], [], [], []], $("#chart"));
window.connectomeChart = chart;  // for tests and the console
window.addEventListener("resize", fit);

function plot() {
  const ps = [...points.values()].sort((a, b) => a.step - b.step);
  chart.setData([
    ps.map((p) => p.removed ?? 0),
    ps.map((p) => p.top1),
    ps.map((p) => p.loss),
    ps.map((p) => p.eval_top1 ?? null),
  ]);
  $("#chart").dataset.points = ps.length;
  $("#chart").hidden = !ps.length;  // no empty frame for a queued job, or one that failed at once
  fit();
}

// ---- start

function fromHash() {
  const m = location.hash.match(/job=(\d+)/);
  if (!m) return;
  pinned = true;
  if (+m[1] !== selected) select(+m[1]);
}
window.addEventListener("hashchange", fromHash);
fromHash();
poll();
setInterval(poll, 2000);
