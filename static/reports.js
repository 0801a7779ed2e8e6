// Usage and reports: the overview panel polls itself (hx-trigger="every Ns"); while the tab is
// hidden the polls are skipped, and coming back refreshes at once ("visible-again").
(function () {
  "use strict";
  document.addEventListener("htmx:beforeRequest", function (ev) {
    if (document.hidden && ev.detail.elt && ev.detail.elt.id === "overview-panel") ev.preventDefault();
  });
  document.addEventListener("visibilitychange", function () {
    var panel = document.getElementById("overview-panel");
    if (!document.hidden && panel && window.htmx) window.htmx.trigger(panel, "visible-again");
  });
})();
