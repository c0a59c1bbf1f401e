// Optional: show <time> elements in the browser's time zone. Every page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var lang = document.documentElement.lang || undefined;
  var fmt = new Intl.DateTimeFormat(lang, {year: "numeric", month: "2-digit", day: "2-digit",
                                           hour: "2-digit", minute: "2-digit"});
  document.querySelectorAll("time[data-local]").forEach(function (el) {
    var d = new Date(el.getAttribute("datetime"));
    if (!isNaN(d)) { el.textContent = fmt.format(d); el.title = el.getAttribute("datetime"); }
  });
  var note = document.querySelector("[data-zone-note]");
  if (note) {
    try { note.textContent = note.getAttribute("data-zone-note").replace("{zone}",
      Intl.DateTimeFormat().resolvedOptions().timeZone); } catch (e) {}
  }
});
