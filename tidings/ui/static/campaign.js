/* The campaign page: poll the send's progress, swap in fresh server-rendered results when the
   counts move, draw the charts (Chart.js, vendored), and preview for one user. */
(function () {
  "use strict";
  var T = window.Tidings;
  var root = document.getElementById("results");
  var charts = [];

  function draw() {
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    if (!window.Chart || !root) return;
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var src = root.querySelector('script.chart-data[data-for="' + canvas.getAttribute("data-chart") + '"]');
      if (!src) return;
      var d = JSON.parse(src.textContent);
      var values = d.values.map(function (v) { return v === null ? 0 : (d.percent ? v * 100 : v); });
      charts.push(new window.Chart(canvas, {
        type: "bar",
        data: { labels: d.labels, datasets: [{ label: d.title || "", data: values,
          backgroundColor: d.labels.map(function (l) { return l === "control" ? "#98a2b3" : "#2452d6"; }) }] },
        options: {
          animation: false, maintainAspectRatio: false, responsive: true,
          plugins: { legend: { display: false }, title: { display: !!d.title, text: d.title || "" } },
          scales: { y: { beginAtZero: true, ticks: { callback: function (v) { return d.percent ? v + "%" : v; } } } }
        }
      }));
    });
  }

  var last = null, timer = null;
  function live() {
    var card = document.getElementById("progress-card");
    return card && card.getAttribute("data-live") === "1";
  }
  function refresh() {
    return fetch(root.getAttribute("data-results-url"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) { root.innerHTML = html; draw(); } });
  }
  function poll() {
    T.getJSON(root.getAttribute("data-progress-url")).then(function (r) {
      if (!r.ok) return;
      var key = JSON.stringify([r.data.status, r.data.counts, r.data.total]);
      var p = root.querySelector("#send-progress");
      if (p && r.data.total) { p.max = r.data.total; p.value = r.data.done; }
      var changed = key !== last;
      last = key;
      return changed ? refresh() : null;
    }).catch(function () {}).then(function () {
      if (live() || document.visibilityState === "hidden") timer = setTimeout(poll, 2000);
      else timer = setTimeout(poll, 10000);  // settled: look again now and then
    });
  }

  if (root) {
    draw();
    timer = setTimeout(poll, live() ? 1500 : 10000);
  }

  var pf = document.getElementById("campaign-preview");
  if (pf) {
    pf.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var user = document.getElementById("pv-user").value.trim();
      var out = document.getElementById("pv-out");
      if (!user) return;
      T.postJSON(pf.getAttribute("data-url"), { id: Number(pf.getAttribute("data-id")), user: user }).then(function (r) {
        if (r.ok) T.renderPreview(out, r.data);
        else { out.textContent = ""; out.appendChild(T.el("p", { "class": "error" }, (r.data.error || {}).message || "cannot preview")); }
      });
    });
  }
})();
