// pushpop dashboard: refreshes the page's live part every few seconds, in place.
// The page is fetched again and #live is swapped; the URL (topic, state, page) and the
// scroll position stay, and nothing is swapped while the operator types or presses a button.
(function () {
  "use strict";
  var seconds = Number(document.body.dataset.refresh) || 5;
  var box = document.getElementById("auto-refresh");
  var busy = false;
  if (box) {
    box.checked = sessionStorage.getItem("pushpop-refresh") !== "off";
    box.addEventListener("change", function () {
      sessionStorage.setItem("pushpop-refresh", box.checked ? "on" : "off");
    });
  }
  document.addEventListener("submit", function () { busy = true; });

  function typing() {
    var el = document.activeElement;
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA") && el.type !== "checkbox";
  }

  function refresh() {
    var live = document.getElementById("live");
    if (!live || busy || document.hidden || typing() || (box && !box.checked)) return;
    if (live.querySelector("[data-static]")) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Pushpop-Refresh": "1" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null || busy || typing()) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live");
        if (!fresh) return;
        var x = window.scrollX, y = window.scrollY;
        live.replaceChildren.apply(live, Array.prototype.slice.call(fresh.childNodes).map(function (n) {
          return document.importNode(n, true);
        }));
        window.scrollTo(x, y);
        document.body.dataset.refreshed = String(Date.now());
      })
      .catch(function () { /* the next tick tries again */ });
  }
  window.setInterval(refresh, seconds * 1000);
})();
