// The spiderfarm console: polls /api/state (1 s) and /api/hosts (2 s); no dependencies.
"use strict";
(function () {
  const config = JSON.parse(document.getElementById("config").dataset.config || "{}");
  const TOKEN_KEY = "spiderfarm-console-token";
  let token = config.token_required ? (localStorage.getItem(TOKEN_KEY) || "") : "";
  const hostView = { sort: "in_flight", order: "desc", page: 0, perPage: 50 };
  let latest = null;
  const $ = (id) => document.getElementById(id);
  const fmt = (n) => (n === null || n === undefined) ? "–" : Number(n).toLocaleString("en-US");

  function duration(s) {
    if (s === null || s === undefined) return "unknown";
    s = Math.round(s);
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), r = s % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${r}s`;
    return `${r}s`;
  }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  async function api(path, body) {
    const init = body === undefined ? { headers: headers() } : {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", "X-Spiderfarm-Token": token || "-" }),
      body: JSON.stringify(body),
    };
    const response = await fetch(path, init);
    if (response.status === 401) { askToken("that token was refused"); throw new Error("401"); }
    if (!response.ok) throw new Error(await response.text());
    return response.json();
  }

  function askToken(message) {
    localStorage.removeItem(TOKEN_KEY);
    token = "";
    $("main").hidden = true;
    $("token-form").hidden = false;
    $("token-error").textContent = message || "";
  }

  function cell(row, text, cls) {
    const td = row.insertCell();
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function fillTable(id, rows, render) {
    const body = $(id).tBodies[0];
    const fresh = document.createElement("tbody");
    for (const r of rows) render(fresh.insertRow(), r);
    body.replaceWith(fresh);
  }

  function drawChart(points) {
    const svg = $("chart");
    svg.dataset.points = String(points.length);
    const [pl, el] = svg.querySelectorAll("polyline");
    if (!points.length) { pl.setAttribute("points", ""); el.setAttribute("points", ""); return; }
    const t0 = 0, t1 = points[points.length - 1][0] || 1;
    const top = Math.max(1, ...points.map((p) => Math.max(p[1], p[2]))) * 1.1;
    const x = (t) => ((t - t0) / (t1 - t0 || 1) * 1000).toFixed(1);
    const y = (v) => (220 - v / top * 210).toFixed(1);
    pl.setAttribute("points", points.map((p) => `${x(p[0])},${y(p[1])}`).join(" "));
    el.setAttribute("points", points.map((p) => `${x(p[0])},${y(p[2])}`).join(" "));
    const grid = $("chart-grid");
    grid.replaceChildren();
    for (const f of [0.25, 0.5, 0.75]) {
      const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
      line.setAttribute("x1", "0"); line.setAttribute("x2", "1000");
      line.setAttribute("y1", String(220 - f * 210)); line.setAttribute("y2", String(220 - f * 210));
      grid.appendChild(line);
    }
    $("chart-end").textContent = duration(t1);
    $("chart-max").textContent = `top ${fmt(Math.round(top))}/s`;
  }

  function render(s) {
    latest = s;
    $("state").textContent = s.close_reason ? `${s.state} (${s.close_reason})` : s.state;
    $("paused-badge").hidden = !s.paused;
    $("pause-farm").hidden = s.paused;
    $("resume-farm").hidden = !s.paused;
    $("pages").textContent = fmt(s.pages);
    $("rate-now").textContent = fmt(s.pages_per_s);
    $("rate-avg").textContent = fmt(s.pages_per_s_avg);
    $("items").textContent = fmt(s.items);
    $("queued").textContent = fmt(s.queued);
    $("in-flight").textContent = fmt(s.in_flight);
    $("workers").textContent = fmt(s.workers);
    $("errors").textContent = fmt(s.errors);
    $("retries").textContent = fmt(s.retries);
    $("dead-letters").textContent = fmt(s.dead_letters);
    $("elapsed").textContent = duration(s.elapsed_s);
    $("eta").textContent = s.eta_s === null ? "unknown" : duration(s.eta_s);
    drawChart(s.chart);
    fillTable("errors-table", Object.entries(s.errors_by_reason), (row, [k, v]) => { cell(row, k); cell(row, fmt(v), "num"); });
    fillTable("spider-stats", Object.entries(s.spider_stats), (row, [k, v]) => { cell(row, k); cell(row, fmt(v), "num"); });
    fillTable("workers-table", s.worker_rows, (row, w) => {
      cell(row, w.id); cell(row, w.machine); cell(row, w.pid, "num"); cell(row, fmt(w.pages), "num");
      cell(row, fmt(w.pages_per_s), "num"); cell(row, fmt(w.in_flight), "num");
      cell(row, duration(w.last_seen_s) + " ago", "num"); cell(row, w.state, "state-" + w.state);
    });
    fillTable("dead-table", s.dead_letter_rows, (row, d) => { cell(row, d[0]); cell(row, d[1]); cell(row, fmt(d[2]), "num"); });
    $("host-count").textContent = `${fmt(s.host_count)} hosts`;
    $("submit-box").hidden = !s.serving;
    $("footer").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  function renderHosts(h) {
    fillTable("hosts-table", h.rows, (row, r) => {
      cell(row, r.host); cell(row, fmt(r.queued), "num"); cell(row, fmt(r.in_flight), "num");
      cell(row, fmt(r.pages), "num"); cell(row, fmt(r.errors), "num"); cell(row, r.delay_s.toFixed(2) + "s", "num");
      cell(row, r.robots || "–"); cell(row, r.backed_off ? "yes" : "");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = r.paused ? "resume" : "pause";
      button.addEventListener("click", () => act(r.paused ? "/api/resume" : "/api/pause", { host: r.host }));
      row.insertCell().appendChild(button);
    });
    const pages = Math.max(1, Math.ceil(h.total / h.per_page));
    $("hosts-page").textContent = `page ${h.page + 1} of ${pages}`;
    $("hosts-prev").disabled = h.page === 0;
    $("hosts-next").disabled = h.page + 1 >= pages;
    for (const th of document.querySelectorAll("#hosts-table th[data-sort]")) {
      th.classList.toggle("sorted", th.dataset.sort === hostView.sort);
      th.classList.toggle("asc", hostView.order === "asc");
    }
  }

  async function refresh() {
    try { render(await api("/api/state")); } catch (e) { $("footer").textContent = "not answering: " + e.message; }
  }

  async function refreshHosts() {
    const q = `sort=${hostView.sort}&order=${hostView.order}&page=${hostView.page}&per_page=${hostView.perPage}`;
    try { renderHosts(await api("/api/hosts?" + q)); } catch (e) { /* shown by refresh */ }
  }

  async function act(path, body) {
    try { await api(path, body || {}); } catch (e) { alert(e.message); }
    refresh(); refreshHosts();
  }

  function start() {
    $("token-form").hidden = true;
    $("main").hidden = false;
    refresh(); refreshHosts();
    if (!start.timers) start.timers = [setInterval(refresh, 1000), setInterval(refreshHosts, 2000)];
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token-input").value.trim();
    localStorage.setItem(TOKEN_KEY, token);
    start();
  });
  $("pause-farm").addEventListener("click", () => act("/api/pause"));
  $("resume-farm").addEventListener("click", () => act("/api/resume"));
  $("stop-crawl").addEventListener("click", () => {
    if (confirm("Stop the crawl? In-flight requests finish; the queue is kept with --job-dir.")) act("/api/stop");
  });
  for (const th of document.querySelectorAll("#hosts-table th[data-sort]")) {
    th.addEventListener("click", () => {
      if (hostView.sort === th.dataset.sort) hostView.order = hostView.order === "desc" ? "asc" : "desc";
      else { hostView.sort = th.dataset.sort; hostView.order = th.dataset.sort === "host" ? "asc" : "desc"; }
      hostView.page = 0; refreshHosts();
    });
  }
  $("hosts-prev").addEventListener("click", () => { hostView.page = Math.max(0, hostView.page - 1); refreshHosts(); });
  $("hosts-next").addEventListener("click", () => { hostView.page += 1; refreshHosts(); });
  $("submit-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const tasks = $("submit-urls").value.split("\n").map((l) => l.trim()).filter(Boolean);
    try {
      const r = await api("/api/submit", { tasks });
      $("submit-result").textContent = `${r.accepted} queued, ${r.filtered.length} filtered, ${r.refused.length} refused` +
        (r.refused.length ? ": " + r.refused.map((x) => x[1]).join("; ") : "");
      if (!r.refused.length) $("submit-urls").value = "";
    } catch (e) { $("submit-result").textContent = e.message; }
  });

  if (config.token_required && !token) askToken(); else start();
})();
