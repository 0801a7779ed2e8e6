// The top bar's menus (Configure, Admin): one open at a time, closed by a click elsewhere or Escape.
(function () {
  "use strict";
  function closeAll(except) {
    document.querySelectorAll("details.nav-menu[open]").forEach(function (d) {
      if (d !== except) d.removeAttribute("open");
    });
  }
  document.addEventListener("click", function (ev) {
    closeAll(ev.target.closest ? ev.target.closest("details.nav-menu") : null);
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape") closeAll(null);
  });
})();
