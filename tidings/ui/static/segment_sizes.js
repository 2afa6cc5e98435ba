/* Segment list: fetch each segment's size after the page, two at a time. */
(function () {
  "use strict";
  var cells = Array.prototype.slice.call(document.querySelectorAll("[data-size-url]"));
  function next() {
    var cell = cells.shift();
    if (!cell) return;
    window.Tidings.getJSON(cell.getAttribute("data-size-url")).then(function (r) {
      cell.textContent = r.ok && r.data.count !== null ? r.data.count.toLocaleString("en-US") : "—";
      cell.setAttribute("data-count", r.ok && r.data.count !== null ? String(r.data.count) : "");
    }).catch(function () { cell.textContent = "—"; }).then(next);
  }
  next(); next();
})();
