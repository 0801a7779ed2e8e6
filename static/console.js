// Console behaviour without inline handlers: copy buttons, confirmations, batch selection,
// error toasts for htmx, the provider form's defaults and the streaming playground.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function toast(message, kind) {
    var el = document.getElementById("toast");
    if (!el) return;
    el.textContent = message;
    el.className = "toast " + (kind || "error");
    el.hidden = false;
    clearTimeout(el._timer);
    el._timer = setTimeout(function () { el.hidden = true; }, 5000);
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Plain-http consoles (no secure context): the old selection-based copy.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest("[data-copy-target]");
    if (btn) {
      var src = document.querySelector(btn.getAttribute("data-copy-target"));
      if (!src) return;
      copyText(src.textContent).then(function () {
        btn.textContent = "Copied";
        btn.classList.add("copied");
        setTimeout(function () { btn.textContent = "Copy"; btn.classList.remove("copied"); }, 2000);
      }, function () { toast("Copy failed: select the text and copy it by hand."); });
      return;
    }
    var close = ev.target.closest("[data-close-drawer]");
    if (close) {
      var drawer = close.closest(".drawer");
      if (drawer) { drawer.innerHTML = ""; drawer.classList.remove("open"); }
      return;
    }
    // Submit buttons may carry their own confirmation (batch actions).
    var submit = ev.target.closest("button[type=submit][data-confirm]");
    if (submit) {
      var form = submit.form;
      if (form && form.querySelectorAll('input[name="ids"]:checked').length === 0 && form.hasAttribute("data-confirm-batch")) {
        ev.preventDefault();
        toast("Select at least one key first.");
        return;
      }
      if (!window.confirm(submit.getAttribute("data-confirm"))) ev.preventDefault();
      else submit.dataset.confirmed = "1";
    }
  });

  // Rows that open on click open on Enter too (htmx trigger filters would need eval).
  document.addEventListener("keyup", function (ev) {
    var row = ev.key === "Enter" && ev.target.closest("[data-enter-clicks]");
    if (row) row.click();
  });

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var message = form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) ev.preventDefault();
  });

  document.addEventListener("change", function (ev) {
    var all = ev.target.closest("[data-select-all]");
    if (all) {
      var name = all.getAttribute("data-select-all");
      var scope = all.closest("form") || document;
      scope.querySelectorAll('input[name="' + name + '"]').forEach(function (box) { box.checked = all.checked; });
    }
    if (ev.target.id === "provider-kind") {
      var defaults = JSON.parse(ev.target.getAttribute("data-defaults") || "{}");
      var url = document.getElementById("provider-base-url");
      if (url) url.placeholder = defaults[ev.target.value] || "";
      var models = JSON.parse(ev.target.getAttribute("data-models") || "{}")[ev.target.value];
      var box = document.getElementById("provider-models");
      if (box && models && models.length) box.placeholder = "e.g. " + models.join(", ");
    }
    if (ev.target.id === "range-select") showCustomRange();
  });

  function showCustomRange() {
    var sel = document.getElementById("range-select");
    if (!sel) return;
    document.querySelectorAll(".custom-range").forEach(function (el) { el.hidden = sel.value !== "custom"; });
  }
  document.addEventListener("DOMContentLoaded", showCustomRange);

  // Usage charts: each figure comes as JSON in a <script type="application/json"> next to the
  // element it is drawn in, so the page needs no inline script. Also for panels htmx swaps in.
  function drawCharts(root) {
    if (!window.Plotly || !root.querySelectorAll) return;
    root.querySelectorAll("[data-figure]").forEach(function (el) {
      var source = document.getElementById(el.getAttribute("data-figure"));
      if (!source || el.getAttribute("data-drawn")) return;
      el.setAttribute("data-drawn", "1");
      var fig = JSON.parse(source.textContent);
      window.Plotly.newPlot(el, fig.data, fig.layout, fig.config);
    });
  }
  document.addEventListener("DOMContentLoaded", function () { drawCharts(document); });
  document.addEventListener("htmx:load", function (ev) { drawCharts(ev.detail.elt); });

  // Charts drawn while the page was still being laid out may have the wrong width.
  function resizeCharts() {
    if (!window.Plotly) return;
    document.querySelectorAll(".js-plotly-plot").forEach(function (el) { window.Plotly.Plots.resize(el); });
  }
  window.addEventListener("load", resizeCharts);
  document.addEventListener("htmx:afterSettle", resizeCharts);

  document.addEventListener("htmx:afterSwap", function (ev) {
    if (ev.detail.target && ev.detail.target.id === "log-detail") ev.detail.target.classList.add("open");
  });
  document.addEventListener("htmx:responseError", function (ev) {
    var status = ev.detail.xhr.status;
    var messages = {400: "The request was refused: reload the page and try again.",
      403: "Your role does not allow this action.", 404: "Not found: it may have been deleted.",
      429: "Too many requests: wait a moment."};
    toast(serverMessage(ev.detail.xhr) || messages[status] || "The server answered " + status + ". Try again.");
  });

  // The server's own words when it sent a flash partial (a stale CSRF token, a foreign origin).
  function serverMessage(xhr) {
    if ((xhr.getResponseHeader("content-type") || "").indexOf("text/html") !== 0) return "";
    var doc = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
    var flash = doc.querySelector("p.flash[role=alert]");
    return flash && !doc.querySelector("main") ? flash.textContent.trim() : "";
  }
  document.addEventListener("htmx:sendError", function () { toast("The gateway can't be reached."); });

  // Playground: POST the form as JSON, read the SSE stream and append text as it arrives.
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("playground");
    if (!form) return;
    var out = document.getElementById("pg-output");
    var status = document.getElementById("pg-status");
    var meta = document.getElementById("pg-meta");
    var stop = document.getElementById("pg-stop");
    var send = document.getElementById("pg-send");
    var controller = null;

    function showErrors(err) {
      form.querySelectorAll("[data-error-for]").forEach(function (el) { el.hidden = true; el.textContent = ""; });
      if (!err) return;
      var slot = err.param && form.querySelector('[data-error-for="' + err.param + '"]');
      if (slot) { slot.textContent = err.message; slot.hidden = false; }
      else { status.textContent = err.message; }
    }

    stop.addEventListener("click", function () { if (controller) controller.abort(); });

    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var data = Object.fromEntries(new FormData(form).entries());
      showErrors(null);
      out.textContent = "";
      meta.textContent = "";
      status.textContent = "Waiting for the first token…";
      send.disabled = true;
      stop.hidden = false;
      controller = new AbortController();
      var started = performance.now();
      var usage = null;
      fetch(form.getAttribute("data-stream-url"), {
        method: "POST", credentials: "same-origin", signal: controller.signal,
        headers: {"Content-Type": "application/json", "X-CSRFToken": csrfToken(), "Accept": "text/event-stream"},
        body: JSON.stringify(data)
      }).then(function (resp) {
        if (resp.status === 401) { window.location = "/login"; return; }
        var type = resp.headers.get("content-type") || "";
        if (!resp.ok || type.indexOf("text/event-stream") === -1) {
          return resp.json().then(function (body) {
            showErrors(body && body.error ? body.error : {message: "Request failed (" + resp.status + ")."});
            status.textContent = status.textContent || "Failed.";
          }, function () { status.textContent = "Request failed (" + resp.status + ")."; });
        }
        var reader = resp.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        function handle(line) {
          if (line.indexOf("data: ") !== 0) return;
          var payload = line.slice(6);
          if (payload === "[DONE]") { status.textContent = "Done."; return; }
          var msg;
          try { msg = JSON.parse(payload); } catch (e) { return; }
          if (msg.error) { status.textContent = "Error: " + msg.error.message; return; }
          if (msg.usage) usage = msg.usage;
          (msg.choices || []).forEach(function (c) {
            if (c.delta && c.delta.content) {
              if (!out.textContent) status.textContent = "Streaming…";
              out.textContent += c.delta.content;
            }
          });
        }
        function pump() {
          return reader.read().then(function (res) {
            if (res.done) return;
            buffer += decoder.decode(res.value, {stream: true});
            var parts = buffer.split("\n");
            buffer = parts.pop();
            parts.forEach(handle);
            return pump();
          });
        }
        return pump().then(function () {
          if (buffer) handle(buffer);
          var ms = Math.round(performance.now() - started);
          meta.textContent = ms + " ms" + (usage ? " · " + usage.prompt_tokens + " prompt + " +
            usage.completion_tokens + " completion tokens" : "") + " · request " + (resp.headers.get("x-request-id") || "");
        });
      }).catch(function (e) {
        status.textContent = e.name === "AbortError" ? "Stopped." : "Connection failed: " + e.message;
      }).finally(function () { send.disabled = false; stop.hidden = true; controller = null; });
    });
  });
})();
