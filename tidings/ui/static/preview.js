/* Renders a campaign preview result ({target, variant, control, content, error, channel}) for one
   user. In-app content goes into a sandboxed iframe (no scripts, no same-origin access). */
(function () {
  "use strict";
  var T = window.Tidings;

  function esc(s) {
    return String(s === undefined || s === null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function safeUrl(u) { return /^https?:\/\//i.test(u || "") ? u : ""; }

  function inappDocument(c) {
    var css = "body{margin:0;font:15px/1.45 system-ui,sans-serif;color:#1c2230;background:#f2f4f8;}" +
      ".modal{margin:1.2rem;background:#fff;border-radius:14px;box-shadow:0 6px 24px rgba(0,0,0,.18);overflow:hidden}" +
      ".banner{background:#1c2230;color:#fff;padding:.7rem .9rem}.card{margin:.8rem;background:#fff;border:1px solid #dde1e8;border-radius:10px;overflow:hidden}" +
      ".in{padding:.8rem 1rem}h1{font-size:1.1rem;margin:0 0 .3rem}p{margin:0 0 .6rem}img{display:block;width:100%;max-height:10rem;object-fit:cover}" +
      ".btns{display:flex;gap:.4rem;flex-wrap:wrap}.btns span{background:#2452d6;color:#fff;border-radius:6px;padding:.35rem .8rem;font-weight:600}";
    var body;
    if (c.html) {
      body = c.html;
    } else {
      var img = safeUrl(c.image_url) ? '<img alt="" src="' + esc(c.image_url) + '">' : "";
      var btns = (c.buttons || []).map(function (b) { return "<span>" + esc(b.label) + "</span>"; }).join("");
      body = '<div class="' + esc(c.layout || "modal") + '">' + img + '<div class="in">' +
        (c.title ? "<h1>" + esc(c.title) + "</h1>" : "") + (c.body ? "<p>" + esc(c.body) + "</p>" : "") +
        (btns ? '<div class="btns">' + btns + "</div>" : "") + "</div></div>";
    }
    return "<!doctype html><html><head><meta charset='utf-8'><style>" + css + "</style></head><body>" + body + "</body></html>";
  }

  T.renderPreview = function (box, r, targetNames) {
    box.textContent = "";
    function note(text, cls) { box.appendChild(T.el("p", { "class": cls || "muted" }, text)); }
    if (r.error && !r.content) {
      if (r.variant) note("Target " + (r.target + 1) + ", variant " + r.variant + ".");
      note("Rendering failed: " + r.error, "error");
      return;
    }
    if (r.target === null || r.target === undefined) { note("This user is outside the audience and every target: they get nothing."); return; }
    var where = "Target " + (r.target + 1) + (targetNames && targetNames[r.target] ? " (" + targetNames[r.target] + ")" : "");
    if (r.control) { note(where + ": this user is in the control group and gets nothing."); return; }
    note(where + ", variant " + r.variant + (r.forced ? " (chosen; not necessarily this user's)" : "") + ".");
    var c = r.content || {};
    if (r.channel === "sms") {
      box.appendChild(T.el("div", { "class": "sms", "data-preview": "sms" }, c.body));
      var n = (c.body || "").length;
      note(n + " characters, " + (n <= 160 ? 1 : Math.ceil(n / 153)) + " SMS segment" + (n > 160 ? "s" : "") + " (GSM-7)", "hint");
    } else if (r.channel === "push") {
      var card = T.el("div", { "class": "push", "data-preview": "push" });
      card.appendChild(T.el("strong", null, c.title || ""));
      card.appendChild(T.el("div", null, c.body || ""));
      box.appendChild(card);
      if (c.data && Object.keys(c.data).length) note("data: " + JSON.stringify(c.data), "hint");
    } else if (r.channel === "inapp") {
      var frame = T.el("iframe", { sandbox: "", title: "In-app message preview", referrerpolicy: "no-referrer", "data-preview": "inapp" });
      frame.srcdoc = inappDocument(c);
      box.appendChild(frame);
      if (c.expires_hours) note("Expires " + c.expires_hours + " h after it is shown.", "hint");
    } else {
      box.appendChild(T.el("pre", { "class": "sample", "data-preview": "config" }, JSON.stringify(c.hooks || c, null, 2)));
    }
  };
})();
