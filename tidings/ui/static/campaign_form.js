/* Campaign editor: a structured form that builds CONTRACT.md's campaign JSON, saves it through
   the UI's save endpoint (the campaign service validates), and shows each 422 next to the field
   its `details.field` names (e.g. targets.0.variants.1.content.body). */
(function () {
  "use strict";
  var T = window.Tidings;
  var form = document.getElementById("campaign-form");
  if (!form) return;
  var data = JSON.parse(document.getElementById("campaign-data").textContent);
  var extras = JSON.parse(document.getElementById("campaign-extras").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var targetsEl = $("targets");
  var uid = 0;
  function nextId(p) { return p + "-" + (++uid); }

  /* ---- small builders ---- */
  function field(label, control, hint, cls) {
    var wrap = T.el("div", { "class": "field " + (cls || "") });
    var lab = T.el("label", { "for": control.id }, label);
    wrap.appendChild(lab); wrap.appendChild(control);
    if (hint) wrap.appendChild(T.el("p", { "class": "hint" }, hint));
    return wrap;
  }
  function input(key, type, value, attrs) {
    var e = T.el(type === "textarea" ? "textarea" : "input", Object.assign({ id: nextId(key), "data-key": key }, attrs || {}));
    if (type !== "textarea") e.type = type || "text";
    if (value !== undefined && value !== null) e.value = typeof value === "object" ? JSON.stringify(value) : String(value);
    return e;
  }
  function selectEl(key, options, value) {
    var s = T.el("select", { id: nextId(key), "data-key": key });
    options.forEach(function (o) { var op = T.el("option", { value: o[0] }, o[1]); if (String(o[0]) === String(value)) op.selected = true; s.appendChild(op); });
    return s;
  }
  function num(v, integer) {
    v = String(v === undefined || v === null ? "" : v).trim();
    if (v === "") return undefined;
    var n = Number(v);
    if (!isFinite(n) || (integer && Math.floor(n) !== n)) return v;  // the server names the field
    return n;
  }
  function segmentPicker(area) {
    if (!extras.segments.length) return null;
    var s = T.el("select", { id: nextId("segpick"), "aria-label": "Insert a saved segment", "class": "small" });
    s.appendChild(T.el("option", { value: "" }, "Insert a saved segment…"));
    extras.segments.forEach(function (n) { s.appendChild(T.el("option", { value: n }, n)); });
    s.addEventListener("change", function () {
      if (!s.value) return;
      var ref = 'segment("' + s.value.replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '")';
      area.value = area.value.trim() ? area.value.trim() + " and " + ref : ref;
      s.value = "";
      area.dispatchEvent(new Event("input", { bubbles: true }));
    });
    return s;
  }

  /* ---- live audience counts under query fields ---- */
  function liveCount(area, out) {
    var ctl = null;
    var run = T.debounce(function () {
      var q = area.value.trim();
      if (ctl) ctl.abort();
      if (!q) { out.textContent = area.getAttribute("data-empty") || ""; out.classList.remove("error"); return; }
      ctl = new AbortController();
      T.postJSON(extras.urls.count, { query: q }, ctl.signal).then(function (r) {
        if (r.ok) { out.classList.remove("error"); out.textContent = r.data.count.toLocaleString("en-US") + " users match this query now."; }
        else {
          var e = r.data.error || {}, p = (e.details || {}).position;
          out.classList.add("error");
          out.textContent = (p === undefined ? "" : "Error at character " + (p + 1) + ": ") + (e.message || "invalid");
        }
      }).catch(function () {});
    }, 400);
    area.addEventListener("input", run);
    run();
  }

  /* ---- content editors per channel ---- */
  function contentEditor(channel, content) {
    content = content || {};
    var box = T.el("div", { "class": "content" });
    if (channel === "sms") {
      var body = input("body", "textarea", content.body, { rows: 3, maxlength: 1600 });
      box.appendChild(field("Message", body, 'Templates: {{ user.first_name | default("there") }}, {{ user.attr.loyalty }}'));
    } else if (channel === "push") {
      box.appendChild(field("Title", input("title", "text", content.title)));
      box.appendChild(field("Body", input("body", "textarea", content.body, { rows: 2 })));
      box.appendChild(field("Image URL (optional)", input("image_url", "text", content.image_url)));
      var lines = Object.keys(content.data || {}).map(function (k) { return k + "=" + content.data[k]; }).join("\n");
      box.appendChild(field("Data (key=value per line, optional)", input("data", "textarea", lines, { rows: 2, spellcheck: "false" })));
    } else if (channel === "inapp") {
      box.appendChild(field("Layout", selectEl("layout", [["modal", "Modal"], ["banner", "Banner"], ["card", "Card"]], content.layout || "modal")));
      box.appendChild(field("Title", input("title", "text", content.title)));
      box.appendChild(field("Body", input("body", "textarea", content.body, { rows: 2 })));
      box.appendChild(field("Image URL (optional)", input("image_url", "text", content.image_url)));
      var btns = (content.buttons || []).map(function (b) { return b.label + " | " + b.action; }).join("\n");
      box.appendChild(field("Buttons (Label | action per line, up to 5)", input("buttons", "textarea", btns, { rows: 2 })));
      box.appendChild(field("Custom HTML (optional; replaces the layout, sanitised)", input("html", "textarea", content.html, { rows: 3, spellcheck: "false", "class": "code" })));
      box.appendChild(field("Expires after hours (optional)", input("expires_hours", "number", content.expires_hours, { min: 1 })));
    } else {
      var hooks = (content.hooks || {});
      if (!extras.hooks.length) box.appendChild(T.el("p", { "class": "hint" }, "No power hooks yet: create them under Power hooks."));
      var fs = T.el("div", { "data-key": "hooks" });
      extras.hooks.forEach(function (h) {
        var on = Object.prototype.hasOwnProperty.call(hooks, h.key);
        var row = T.el("div", { "class": "grid2 hook-row", "data-hook": h.key, "data-type": h.type });
        var cb = T.el("input", { type: "checkbox", id: nextId("hk") });
        cb.checked = on;
        var lab = T.el("label", { "class": "check", "for": cb.id });
        lab.appendChild(cb); lab.appendChild(document.createTextNode(" Override " + h.key + " (" + h.type + ")"));
        row.appendChild(lab);
        var v = on ? hooks[h.key] : h["default"];
        var valIn = input("hookval", "text", typeof v === "string" ? v : JSON.stringify(v), { "aria-label": "Value of " + h.key });
        row.appendChild(valIn);
        fs.appendChild(row);
      });
      box.appendChild(fs);
    }
    return box;
  }

  function readContent(box, channel) {
    var out = {};
    function v(key) { var e = box.querySelector('[data-key="' + key + '"]'); return e ? e.value : ""; }
    if (channel === "config") {
      var hooks = {};
      box.querySelectorAll(".hook-row").forEach(function (row) {
        if (!row.querySelector("input[type=checkbox]").checked) return;
        var raw = row.querySelector('[data-key="hookval"]').value, type = row.getAttribute("data-type"), val = raw;
        if (type === "number") val = num(raw);
        else if (type === "boolean") val = raw.trim() === "true" ? true : raw.trim() === "false" ? false : raw;
        else if (type === "json") { try { val = JSON.parse(raw); } catch (e) { val = raw; } }
        hooks[row.getAttribute("data-hook")] = val;
      });
      return { hooks: hooks };
    }
    ["body", "title", "image_url", "html", "layout"].forEach(function (k) { if (v(k).trim()) out[k] = v(k); });
    if (channel === "push" && v("data").trim()) {
      out.data = {};
      v("data").split("\n").forEach(function (line) {
        var i = line.indexOf("=");
        if (line.trim()) out.data[(i < 0 ? line : line.slice(0, i)).trim()] = i < 0 ? "" : line.slice(i + 1).trim();
      });
    }
    if (channel === "inapp") {
      if (v("buttons").trim()) {
        out.buttons = v("buttons").split("\n").filter(function (l) { return l.trim(); }).map(function (l) {
          var i = l.indexOf("|");
          return { label: (i < 0 ? l : l.slice(0, i)).trim(), action: i < 0 ? "" : l.slice(i + 1).trim() };
        });
      }
      if (v("expires_hours").trim()) out.expires_hours = num(v("expires_hours"), true);
    }
    return out;
  }

  /* ---- targets and variants ---- */
  function variantEl(v) {
    var el = T.el("div", { "class": "variant", "data-variant": "" });
    var head = T.el("div", { "class": "grid3" });
    head.appendChild(field("Variant name", input("name", "text", v.name, { maxlength: 50 })));
    head.appendChild(field("Weight", input("weight", "number", v.weight === undefined ? 1 : v.weight, { min: 0, step: "any" })));
    var rm = T.el("button", { type: "button", "class": "small danger", "data-act": "rm-variant" }, "Remove variant");
    var wrap = T.el("div", { "class": "field" }); wrap.appendChild(rm); head.appendChild(wrap);
    el.appendChild(head);
    var content = T.el("div", { "data-content": "" });
    content.appendChild(contentEditor(channel(), v.content));
    el.appendChild(content);
    return el;
  }

  function targetEl(t) {
    var el = T.el("div", { "class": "target", "data-target": "" });
    var head = T.el("div", { "class": "head" });
    head.appendChild(T.el("h3", { "data-title": "" }, "Target"));
    var acts = T.el("div", { "class": "actions" });
    [["up", "↑", "Move up"], ["down", "↓", "Move down"], ["rm-target", "Remove target", null]].forEach(function (a) {
      acts.appendChild(T.el("button", { type: "button", "class": "small" + (a[0] === "rm-target" ? " danger" : ""), "data-act": a[0], "aria-label": a[2] }, a[1]));
    });
    head.appendChild(acts);
    el.appendChild(head);
    var seg = input("segment", "textarea", t.segment || "", { rows: 1, spellcheck: "false", autocapitalize: "off", "class": "code",
      "data-empty": "Empty: everyone left in the audience." });
    var segField = field("Segment query", seg, null);
    var out = T.el("p", { "class": "hint count-out", "aria-live": "polite" });
    var picker = segmentPicker(seg);
    if (picker) segField.appendChild(picker);
    segField.appendChild(out);
    el.appendChild(segField);
    el.appendChild(field("Control group (% held out, gets nothing)", input("control_percent", "number", t.control_percent === undefined ? 0 : t.control_percent, { min: 0, max: 100, step: "any" })));
    var vs = T.el("div", { "data-variants": "" });
    (t.variants || []).forEach(function (v) { vs.appendChild(variantEl(v)); });
    el.appendChild(vs);
    el.appendChild(T.el("button", { type: "button", "class": "small", "data-act": "add-variant" }, "Add a variant"));
    liveCount(seg, out);
    return el;
  }

  function targets() { return Array.prototype.slice.call(targetsEl.querySelectorAll("[data-target]")); }

  /* data-path on every control, from its place: where the server's field names point. */
  function renumber() {
    targets().forEach(function (t, ti) {
      t.querySelector("[data-title]").textContent = "Target " + (ti + 1);
      t.querySelector('[data-key="segment"]').setAttribute("data-path", "targets." + ti + ".segment");
      t.querySelector('[data-key="control_percent"]').setAttribute("data-path", "targets." + ti + ".control_percent");
      t.querySelector("[data-variants]").setAttribute("data-path", "targets." + ti + ".variants");
      t.querySelectorAll("[data-variant]").forEach(function (v, vi) {
        var p = "targets." + ti + ".variants." + vi;
        v.setAttribute("data-path", p);
        v.querySelector('[data-key="name"]').setAttribute("data-path", p + ".name");
        v.querySelector('[data-key="weight"]').setAttribute("data-path", p + ".weight");
        v.querySelector("[data-content]").setAttribute("data-path", p + ".content");
        v.querySelectorAll("[data-content] [data-key]").forEach(function (c) {
          c.setAttribute("data-path", p + ".content." + c.getAttribute("data-key"));
        });
        v.querySelectorAll(".hook-row").forEach(function (r) { r.setAttribute("data-path", p + ".content.hooks." + r.getAttribute("data-hook")); });
      });
    });
    refreshVariantChoices();
  }

  targetsEl.addEventListener("click", function (ev) {
    var b = ev.target.closest("[data-act]");
    if (!b) return;
    var t = b.closest("[data-target]"), act = b.getAttribute("data-act");
    if (act === "up" && t.previousElementSibling) targetsEl.insertBefore(t, t.previousElementSibling);
    if (act === "down" && t.nextElementSibling) targetsEl.insertBefore(t.nextElementSibling, t);
    if (act === "rm-target" && targets().length > 1) t.remove();
    if (act === "add-variant") {
      var n = t.querySelectorAll("[data-variant]").length;
      t.querySelector("[data-variants]").appendChild(variantEl({ name: String.fromCharCode(65 + n), weight: 50, content: {} }));
    }
    if (act === "rm-variant" && t.querySelectorAll("[data-variant]").length > 1) b.closest("[data-variant]").remove();
    renumber();
    schedulePreview();
  });
  $("add-target").addEventListener("click", function () {
    targetsEl.appendChild(targetEl({ segment: null, control_percent: 0, variants: [{ name: "A", weight: 1, content: {} }] }));
    renumber();
  });

  function channel() { return $("c-channel").value; }
  $("c-channel").addEventListener("change", function () {
    targets().forEach(function (t) {
      t.querySelectorAll("[data-content]").forEach(function (c) { c.textContent = ""; c.appendChild(contentEditor(channel(), {})); });
    });
    if (channel() === "sms" && !$("c-quiet").checked) {
      $("c-quiet").checked = true; $("c-quiet-start").value = extras.sms_quiet_hours.start; $("c-quiet-end").value = extras.sms_quiet_hours.end;
    }
    syncToggles(); renumber();
  });

  /* ---- schedule and toggles ---- */
  function scheduleType() { var r = form.querySelector('input[name="schedule-type"]:checked'); return r ? r.value : "now"; }
  function syncToggles() {
    var kind = scheduleType();
    form.querySelectorAll(".sched").forEach(function (e) { e.hidden = !e.classList.contains("sched-" + kind); });
    $("c-quiet-start").disabled = $("c-quiet-end").disabled = !$("c-quiet").checked;
    $("c-cap-max").disabled = $("c-cap-hours").disabled = !$("c-cap").checked;
  }
  form.addEventListener("change", function (ev) {
    if (ev.target.name === "schedule-type" || ["c-quiet", "c-cap", "c-local"].indexOf(ev.target.id) >= 0) syncToggles();
  });
  var zone = (Intl.DateTimeFormat().resolvedOptions().timeZone || "your time zone");
  function atHint() { $("c-at-zone").textContent = $("c-local").checked ? "Wall-clock time in each user's zone." : "In your browser's time zone (" + zone + ")."; }
  $("c-local").addEventListener("change", atHint);

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function toLocalInput(iso, wall) {
    if (!iso) return "";
    if (wall) return iso.slice(0, 16);
    var d = new Date(iso);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }
  function fromLocalInput(v, wall) {
    if (!v) return undefined;
    if (wall) return v + ":00+00:00";  // a wall-clock time: its offset is ignored
    var d = new Date(v);
    return isNaN(d.getTime()) ? v : d.toISOString();
  }

  /* ---- fill from the saved definition ---- */
  function fill() {
    $("c-name").value = data.name || "";
    $("c-channel").value = data.channel;
    $("c-audience").value = data.audience || "";
    var s = data.schedule || { type: "now" };
    form.querySelector('input[name="schedule-type"][value="' + s.type + '"]').checked = true;
    $("c-local").checked = !!data.local_time;
    $("c-at").value = toLocalInput(s.at, data.local_time);
    $("c-cron").value = s.cron || "";
    $("c-event").value = s.event || "";
    $("c-delay").value = s.delay_minutes === undefined ? "" : s.delay_minutes;
    $("c-quiet").checked = !!data.quiet_hours;
    $("c-quiet-start").value = (data.quiet_hours || extras.sms_quiet_hours).start;
    $("c-quiet-end").value = (data.quiet_hours || extras.sms_quiet_hours).end;
    $("c-cap").checked = !!data.frequency_cap;
    $("c-cap-max").value = data.frequency_cap ? data.frequency_cap.max : 2;
    $("c-cap-hours").value = data.frequency_cap ? data.frequency_cap.per_hours : 24;
    $("c-rate").value = data.rate_limit_per_second || "";
    $("c-conv-event").value = data.conversion ? data.conversion.event : "";
    $("c-conv-hours").value = data.conversion ? data.conversion.window_hours : 72;
    (data.targets || []).forEach(function (t) { targetsEl.appendChild(targetEl(t)); });
    syncToggles(); atHint(); renumber();
    $("c-audience").setAttribute("data-empty", "Empty: everyone.");
    liveCount($("c-audience"), $("c-audience").parentElement.querySelector(".count-out"));
    var picker = segmentPicker($("c-audience"));
    if (picker) $("c-audience").parentElement.insertBefore(picker, $("c-audience").nextSibling);
  }

  /* ---- the JSON the service validates ---- */
  function collect() {
    var ch = channel(), kind = scheduleType();
    var spec = { name: $("c-name").value.trim(), channel: ch, audience: $("c-audience").value.trim() || null };
    spec.targets = targets().map(function (t) {
      return {
        segment: t.querySelector('[data-key="segment"]').value.trim() || null,
        control_percent: num(t.querySelector('[data-key="control_percent"]').value) || 0,
        variants: Array.prototype.map.call(t.querySelectorAll("[data-variant]"), function (v) {
          var w = num(v.querySelector('[data-key="weight"]').value);
          return { name: v.querySelector('[data-key="name"]').value.trim(), weight: w === undefined ? 1 : w,
                   content: readContent(v.querySelector("[data-content]"), ch) };
        })
      };
    });
    var sched = { type: kind };
    if (kind === "once") sched.at = fromLocalInput($("c-at").value, $("c-local").checked) || "";
    if (kind === "recurring") sched.cron = $("c-cron").value.trim();
    if (kind === "triggered") {
      sched.event = $("c-event").value.trim();
      var d = num($("c-delay").value, true);
      if (d !== undefined) sched.delay_minutes = d;
    }
    spec.schedule = sched;
    spec.local_time = (kind === "once" || kind === "recurring") && $("c-local").checked;
    spec.quiet_hours = $("c-quiet").checked ? { start: $("c-quiet-start").value, end: $("c-quiet-end").value } : null;
    spec.frequency_cap = $("c-cap").checked ? { max: num($("c-cap-max").value, true), per_hours: num($("c-cap-hours").value, true) } : null;
    spec.rate_limit_per_second = num($("c-rate").value, true) === undefined ? null : num($("c-rate").value, true);
    var ev = $("c-conv-event").value.trim();
    spec.conversion = ev ? { event: ev, window_hours: num($("c-conv-hours").value, true) || 72 } : null;
    return spec;
  }

  /* ---- errors next to their fields ---- */
  var summary = $("form-errors");
  function clearErrors() {
    form.querySelectorAll(".js-err").forEach(function (e) { e.remove(); });
    form.querySelectorAll("[aria-invalid]").forEach(function (e) { e.removeAttribute("aria-invalid"); });
    summary.hidden = true; summary.textContent = "";
  }
  function findByPath(path) {
    var parts = (path || "").split(".");
    while (parts.length) {
      var el = form.querySelector('[data-path="' + parts.join(".") + '"]');
      if (el) return el;
      parts.pop();
    }
    return null;
  }
  function showError(err) {
    clearErrors();
    var details = err.details || {}, path = details.field;
    var message = err.message || "Please check the form.";
    if (details.position !== undefined && details.position !== null) message += " (at character " + (details.position + 1) + ")";
    summary.hidden = false;
    summary.appendChild(T.el("p", null, message));
    var target = findByPath(path);
    if (!target) { summary.focus && summary.scrollIntoView({ block: "center" }); return; }
    var id = nextId("err");
    var p = T.el("p", { "class": "error js-err", id: id, role: "alert" }, message);
    var holder = target.closest(".field") || target;
    if (holder.tagName === "FIELDSET" || holder.hasAttribute("data-variant") || holder.hasAttribute("data-content") || holder.hasAttribute("data-variants")) holder.insertBefore(p, holder.firstChild.nextSibling);
    else holder.appendChild(p);
    if (/^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)) {
      target.setAttribute("aria-invalid", "true");
      target.setAttribute("aria-describedby", id);
      target.focus({ preventScroll: true });
    }
    holder.scrollIntoView({ block: "center" });
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var btn = $("save");
    btn.disabled = true;
    T.postJSON(extras.urls.save, { id: data.id, campaign: collect() }).then(function (r) {
      btn.disabled = false;
      if (r.ok) { window.location.assign(r.data.url); return; }
      showError(r.data.error || { message: "HTTP " + r.status });
    }).catch(function (e) { btn.disabled = false; showError({ message: "Could not save: " + e.message }); });
  });

  /* ---- live preview for a chosen user ---- */
  var pvOut = $("pv-out"), pvCtl = null;
  function refreshVariantChoices() {
    var sel = $("pv-variant"), keep = sel.value;
    while (sel.options.length > 1) sel.remove(1);
    targets().forEach(function (t, ti) {
      t.querySelectorAll("[data-variant]").forEach(function (v) {
        var name = v.querySelector('[data-key="name"]').value.trim();
        if (name) sel.appendChild(T.el("option", { value: ti + ":" + name }, "Target " + (ti + 1) + " · variant " + name));
      });
    });
    sel.value = keep;
    if (sel.value !== keep) sel.value = "";
  }
  function preview() {
    var user = $("pv-user").value.trim();
    if (!user) return;
    if (pvCtl) pvCtl.abort();
    pvCtl = new AbortController();
    var body = { id: data.id, campaign: collect(), user: user };
    if ($("pv-variant").value) body.variant = $("pv-variant").value;
    T.postJSON(extras.urls.preview, body, pvCtl.signal).then(function (r) {
      if (r.ok) T.renderPreview(pvOut, r.data);
      else {
        pvOut.textContent = "";
        var e = r.data.error || {};
        pvOut.appendChild(T.el("p", { "class": "error" }, (e.details && e.details.field ? e.details.field + ": " : "") + (e.message || "cannot preview")));
      }
    }).catch(function () {});
  }
  var schedulePreview = T.debounce(preview, 600);
  $("pv-run").addEventListener("click", preview);
  $("pv-variant").addEventListener("change", preview);
  $("pv-user").addEventListener("keydown", function (ev) { if (ev.key === "Enter") { ev.preventDefault(); preview(); } });
  form.addEventListener("input", function (ev) {
    if (ev.target.getAttribute("aria-invalid")) {  // the field is being fixed: drop its stale error
      var old = document.getElementById(ev.target.getAttribute("aria-describedby"));
      if (old && old.classList.contains("js-err")) old.remove();
      ev.target.removeAttribute("aria-invalid");
    }
    if (ev.target.getAttribute("data-key") === "name") refreshVariantChoices();
    if (ev.target.id !== "pv-user") schedulePreview();
  });

  fill();
})();
