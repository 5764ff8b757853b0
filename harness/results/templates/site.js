// The history strips (drawn from their run-length data) and the filter.
// No framework: the page reads without this, the strips and filter need it.
"use strict";
(function () {
  var COLOURS = { p: "#5cb85c", f: "#d9534f", e: "#d9534f", r: "#f0883e", k: "#e0b04f", s: "#bbb",
                  m: "#fff", "-": "#eee" };
  document.querySelectorAll(".strip").forEach(function (el) {
    var runs = el.dataset.h.match(/[a-z-]\d+/g) || [];
    var total = 0;
    runs.forEach(function (r) { total += parseInt(r.slice(1), 10); });
    if (!total) { return; }
    var at = 0, stops = [];
    runs.forEach(function (r) {
      var c = COLOURS[r[0]] || "#eee", n = parseInt(r.slice(1), 10);
      var a = (100 * at / total).toFixed(2), b = (100 * (at + n) / total).toFixed(2);
      stops.push(c + " " + a + "% " + b + "%");
      at += n;
    });
    el.style.background = "linear-gradient(to right, " + stops.join(", ") + ")";
    el.title = runs.join(" ");
  });
  var filter = document.getElementById("filter");
  var onlyBad = document.getElementById("only-bad");
  function apply() {
    var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    document.querySelectorAll("tr.row").forEach(function (tr) {
      var name = tr.dataset.name.toLowerCase();
      var show = words.every(function (w) { return name.indexOf(w) >= 0; }) &&
                 (!onlyBad.checked || tr.classList.contains("failing"));
      tr.hidden = !show;
    });
  }
  filter.addEventListener("input", apply);
  onlyBad.addEventListener("change", apply);
  document.addEventListener("keydown", function (e) {
    if (e.key === "/" && document.activeElement !== filter) {
      e.preventDefault();
      filter.focus();
    } else if (e.key === "Escape" && document.activeElement === filter) {
      filter.value = "";
      apply();
    }
  });
}());
