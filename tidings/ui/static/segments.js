/* Segment editor: live audience count and sample (debounced), the error underlined at its
   position in a mirror layer behind the textarea, and a builder that writes the query. */
(function () {
  "use strict";
  var T = window.Tidings;
  var area = document.getElementById("query");
  if (!area) return;
  var mirror = document.getElementById("query-mirror");
  var status = document.getElementById("query-status");
  var sample = document.getElementById("query-sample");
  var url = area.getAttribute("data-preview-url");
  var inflight = null, seq = 0;

  function underline(text, pos) {
    mirror.textContent = "";
    if (pos === null || pos === undefined) return;
    pos = Math.max(0, Math.min(pos, text.length));
    var end = pos;
    while (end < text.length && !/\s/.test(text[end]) && end - pos < 40) end++;
    if (end === pos) end = Math.min(pos + 1, text.length);
    mirror.appendChild(document.createTextNode(text.slice(0, pos)));
    var mark = document.createElement("mark");
    mark.textContent = text.slice(pos, end) || " ";
    mirror.appendChild(mark);
    mirror.appendChild(document.createTextNode(text.slice(end)));
    mirror.scrollTop = area.scrollTop;
  }

  function show(parts) {
    status.textContent = "";
    parts.forEach(function (p) { status.appendChild(p); });
  }

  function check() {
    var text = area.value;
    var mine = ++seq;
    if (inflight) inflight.abort();
    if (!text.trim()) {
      underline(text, null); sample.textContent = "";
      show([T.el("span", { "class": "muted" }, "Type a query to see who is in it.")]);
      area.removeAttribute("aria-invalid");
      return;
    }
    inflight = new AbortController();
    show([T.el("span", { "class": "muted" }, "Counting…")]);
    T.postJSON(url, { query: text }, inflight.signal).then(function (r) {
      if (mine !== seq) return;
      if (r.ok) {
        underline(text, null);
        area.removeAttribute("aria-invalid");
        var n = r.data.count;
        show([T.el("span", { "class": "count", "data-count": String(n) }, n.toLocaleString("en-US")),
              T.el("span", null, n === 1 ? "user matches now" : "users match now")]);
        sample.textContent = r.data.sample.length ? "Sample: " + r.data.sample.join(", ") : "";
      } else {
        var err = r.data.error || {}, pos = (err.details || {}).position;
        underline(text, pos);
        area.setAttribute("aria-invalid", "true");
        var where = (pos === undefined || pos === null) ? "" : "Error at character " + (pos + 1) + ": ";
        show([T.el("span", { "class": "problem", "role": "alert" }, where + (err.message || "the query is not valid"))]);
        sample.textContent = "";
      }
    }).catch(function (e) {
      if (e.name !== "AbortError" && mine === seq) show([T.el("span", { "class": "problem" }, "Could not count: " + e.message)]);
    });
  }

  var later = T.debounce(check, 300);
  area.addEventListener("input", function () { mirror.textContent = ""; later(); });
  area.addEventListener("scroll", function () { mirror.scrollTop = area.scrollTop; });
  if (!status.querySelector(".problem")) check();  // else keep the server's underline until the next edit

  /* ---- the saved segment's activity, after the page ---- */
  var churn = document.getElementById("churn");
  if (churn) {
    T.getJSON(churn.getAttribute("data-url")).then(function (r) {
      function put(k, text) { churn.querySelector('[data-churn="' + k + '"]').textContent = text; }
      if (!r.ok) { ["users", "active", "churned"].forEach(function (k) { put(k, "—"); }); return; }
      var d = r.data;
      put("users", d.users.toLocaleString("en-US"));
      put("active", d.active.toLocaleString("en-US"));
      put("churned", d.churned.toLocaleString("en-US") + (d.churn_rate === null ? "" : " (" + (d.churn_rate * 100).toFixed(1) + "%)"));
    }).catch(function () {});
  }

  /* ---- builder -------------------------------------------------------------------------- */
  var dataEl = document.getElementById("builder-data");
  if (!dataEl) return;
  var data = JSON.parse(dataEl.textContent);
  var rowsEl = document.getElementById("builder-rows");
  var out = document.getElementById("builder-out");
  var rowId = 0;

  var CHOICES = {
    platform: ["ios", "android", "web"], device_type: ["phone", "tablet", "desktop"],
    sms_opt_in: ["true", "false"], push_opt_in: ["true", "false"]
  };
  var LABELS = {
    country: "Country (ISO code)", language: "Language", region: "Region", city: "City", timezone: "Time zone",
    platform: "Platform", device_type: "Device type", os_version: "OS version", app_version: "App version",
    created_at: "First seen", last_seen_at: "Last seen", local_hour: "Local hour (0-23)",
    sms_opt_in: "SMS opt-in", push_opt_in: "Push opt-in"
  };
  var KINDS = [];
  Object.keys(data.fields).forEach(function (f) { KINDS.push([f, LABELS[f] || f]); });
  KINDS.push(["attr", "Custom attribute…"], ["did", "Did an event…"], ["near", "Near a place…"]);
  if (data.segments.length) KINDS.push(["segment", "In another segment…"]);

  function quote(s) { return '"' + String(s).replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"'; }
  function literal(v) {
    v = String(v).trim();
    if (/^-?\d+(\.\d+)?$/.test(v) || v === "true" || v === "false") return v;
    return quote(v);
  }
  function opsFor(kind, field) {
    if (kind === "time") return [["ago_lt", "more than … days ago"], ["ago_gt", "within the last … days"]];
    if (kind === "flag" || CHOICES[field]) return [["=", "is"], ["!=", "is not"]];
    if (kind === "version" || kind === "local_hour")
      return [[">=", "≥"], [">", ">"], ["=", "="], ["<", "<"], ["<=", "≤"], ["!=", "≠"], ["exists", "is known"]];
    return [["=", "is"], ["!=", "is not"], ["in", "is one of (comma separated)"], ["starts_with", "starts with"],
            ["contains", "contains"], [">=", "≥"], ["<=", "≤"], ["exists", "is known"]];
  }

  function select(id, label, options, value) {
    var wrap = T.el("div", { "class": "field" });
    wrap.appendChild(T.el("label", { "for": id, "class": "visually-hidden" }, label));
    var s = T.el("select", { id: id });
    options.forEach(function (o) { var op = T.el("option", { value: o[0] }, o[1]); if (o[0] === value) op.selected = true; s.appendChild(op); });
    wrap.appendChild(s);
    return wrap;
  }
  function input(id, label, placeholder) {
    var wrap = T.el("div", { "class": "field" });
    wrap.appendChild(T.el("label", { "for": id, "class": "visually-hidden" }, label));
    wrap.appendChild(T.el("input", { id: id, type: "text", placeholder: placeholder || "", autocomplete: "off" }));
    return wrap;
  }

  function addRow() {
    var id = "b" + (++rowId);
    var row = T.el("div", { "class": "builder-row", "data-row": id });
    var join = select(id + "-join", "Join with", [["and", "and"], ["or", "or"]]);
    if (!rowsEl.children.length) join.style.visibility = "hidden";
    row.appendChild(join);
    row.appendChild(select(id + "-field", "Field", KINDS, "country"));
    var opBox = T.el("div"), valBox = T.el("div");
    row.appendChild(opBox); row.appendChild(valBox);
    var rm = T.el("button", { type: "button", "class": "small", "aria-label": "Remove this condition" }, "✕");
    row.appendChild(rm);
    rowsEl.appendChild(row);

    function layout() {
      var f = val(id + "-field");
      opBox.textContent = ""; valBox.textContent = "";
      var kind = data.fields[f];
      if (f === "attr") {
        opBox.appendChild(input(id + "-name", "Attribute name", "attribute, e.g. loyalty"));
        valBox.appendChild(select(id + "-op", "Comparison", opsFor("attribute", f)));
        valBox.appendChild(input(id + "-val", "Value", "value"));
      } else if (f === "did") {
        opBox.appendChild(input(id + "-name", "Event name", "event, e.g. purchase"));
        valBox.appendChild(input(id + "-times", "At least how many times", "at least … times (optional)"));
        valBox.appendChild(input(id + "-days", "In the last how many days", "in the last … days (optional)"));
      } else if (f === "near") {
        opBox.appendChild(input(id + "-lat", "Latitude", "latitude, e.g. 40.71"));
        opBox.appendChild(input(id + "-lon", "Longitude", "longitude, e.g. -74.0"));
        valBox.appendChild(input(id + "-km", "Distance in km", "within … km"));
      } else if (f === "segment") {
        opBox.appendChild(select(id + "-seg", "Segment", data.segments.map(function (n) { return [n, n]; })));
      } else {
        opBox.appendChild(select(id + "-op", "Comparison", opsFor(kind, f)));
        if (CHOICES[f]) valBox.appendChild(select(id + "-val", "Value", CHOICES[f].map(function (c) { return [c, c]; })));
        else valBox.appendChild(input(id + "-val", "Value", kind === "time" ? "days" : "value"));
      }
      render();
    }
    row.addEventListener("change", function (ev) { if (ev.target.id === id + "-field") layout(); else render(); });
    row.addEventListener("input", render);
    rm.addEventListener("click", function () {
      row.remove();
      var first = rowsEl.querySelector(".builder-row .field");
      if (first) first.style.visibility = "hidden";
      render();
    });
    layout();
  }

  function val(id) { var e = document.getElementById(id); return e ? e.value.trim() : ""; }

  function condition(row) {
    var id = row.getAttribute("data-row"), f = val(id + "-field"), kind = data.fields[f];
    if (f === "segment") return val(id + "-seg") ? "segment(" + quote(val(id + "-seg")) + ")" : null;
    if (f === "near") {
      if (!val(id + "-lat") || !val(id + "-lon") || !val(id + "-km")) return null;
      return "near(" + val(id + "-lat") + ", " + val(id + "-lon") + ", " + val(id + "-km") + "km)";
    }
    if (f === "did") {
      if (!val(id + "-name")) return null;
      var t = "did " + quote(val(id + "-name"));
      if (val(id + "-times")) t += " >= " + val(id + "-times") + " times";
      if (val(id + "-days")) t += " in last " + val(id + "-days") + "d";
      return t;
    }
    var field = f === "attr" ? (val(id + "-name") ? "attr." + val(id + "-name") : null) : f;
    if (!field) return null;
    var op = val(id + "-op"), v = val(id + "-val");
    if (op === "exists") return field + " exists";
    if (!v) return null;
    if (op === "ago_lt") return field + " < " + v + "d ago";
    if (op === "ago_gt") return field + " > " + v + "d ago";
    if (op === "in") return field + " in (" + v.split(",").map(function (x) { return literal(x); }).join(", ") + ")";
    if (op === "starts_with" || op === "contains") return field + " " + op + " " + quote(v);
    if (kind === "profile_text" || kind === "device_text" || kind === "version") return field + " " + op + " " + quote(v);
    return field + " " + op + " " + literal(v);
  }

  function build() {
    var text = "";
    Array.prototype.forEach.call(rowsEl.children, function (row, i) {
      var c = condition(row);
      if (!c) return;
      text += text ? " " + val(row.getAttribute("data-row") + "-join") + " " + c : c;
    });
    return text;
  }
  function render() { out.textContent = build() || "—"; }
  function use(append) {
    var q = build();
    if (!q) return;
    area.value = append && area.value.trim() ? "(" + area.value.trim() + ") and (" + q + ")" : q;
    area.dispatchEvent(new Event("input"));
    area.focus();
  }
  document.getElementById("builder-add").addEventListener("click", addRow);
  document.getElementById("builder-use").addEventListener("click", function () { use(false); });
  document.getElementById("builder-and").addEventListener("click", function () { use(true); });
  addRow();
})();
