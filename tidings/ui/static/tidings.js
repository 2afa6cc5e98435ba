/* Tidings UI: small progressive enhancements shared by every page (no framework). */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  window.Tidings = {
    csrf: function () {
      var m = document.querySelector('meta[name="csrf-token"]');
      return m ? m.content : "";
    },
    postJSON: function (url, body, signal) {
      return fetch(url, {
        method: "POST", credentials: "same-origin", signal: signal,
        headers: { "Content-Type": "application/json", "X-CSRFToken": Tidings.csrf(), "Accept": "application/json" },
        body: JSON.stringify(body)
      }).then(function (r) {
        return r.json().catch(function () { return { error: { message: "HTTP " + r.status } }; })
          .then(function (data) { return { ok: r.ok, status: r.status, data: data }; });
      });
    },
    getJSON: function (url) {
      return fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json().then(function (d) { return { ok: r.ok, status: r.status, data: d }; }); });
    },
    debounce: function (fn, ms) {
      var t;
      return function () { var a = arguments, self = this; clearTimeout(t); t = setTimeout(function () { fn.apply(self, a); }, ms); };
    },
    el: function (tag, attrs, text) {
      var e = document.createElement(tag);
      Object.keys(attrs || {}).forEach(function (k) { if (attrs[k] !== null && attrs[k] !== undefined) e.setAttribute(k, attrs[k]); });
      if (text !== undefined && text !== null) e.textContent = text;
      return e;
    }
  };

  document.addEventListener("change", function (ev) {
    if (ev.target.matches("select[data-autosubmit]")) ev.target.form.submit();
  });
  document.addEventListener("submit", function (ev) {
    var q = ev.target.getAttribute("data-confirm");
    if (q && !window.confirm(q)) ev.preventDefault();
  });
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("[data-copy]");
    if (!b) return;
    var code = b.parentElement.querySelector("[data-key]");
    if (code && navigator.clipboard) navigator.clipboard.writeText(code.textContent.trim()).then(function () { b.textContent = "Copied"; });
  });
})();
