// pennant dashboard: live updates of the Canary page (polls its JSON endpoint and replaces
// the parts that change) and the actions (POST with the bearer token typed on the page).
(function () {
  "use strict";
  window.pennantLoadedAt = window.pennantLoadedAt || Date.now();
  var live = document.querySelector("[data-poll]");
  if (live) {
    var url = live.getAttribute("data-poll");
    var updates = 0;
    var poll = function () {
      fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
        .then(function (parts) {
          Object.keys(parts.text || {}).forEach(function (id) {
            var e = document.getElementById(id);
            if (e) { e.textContent = parts.text[id]; }
          });
          Object.keys(parts.html || {}).forEach(function (id) {
            var e = document.getElementById(id);
            if (e) { e.innerHTML = parts.html[id]; }
          });
          updates += 1;
          document.getElementById("updates").textContent = String(updates);
          document.getElementById("stale").textContent = "";
        })
        .catch(function (err) {
          document.getElementById("stale").textContent = "(update failed: " + err.message + ")";
        })
        .finally(function () { setTimeout(poll, 1500); });
    };
    setTimeout(poll, 1500);
  }
  var box = document.querySelector(".actions");
  if (box) {
    var api = box.getAttribute("data-api");
    var input = document.getElementById("token");
    var out = document.getElementById("action-result");
    box.querySelectorAll("button[data-action]").forEach(function (b) {
      b.addEventListener("click", function () {
        var action = b.getAttribute("data-action");
        fetch(api + "/" + action, {
          method: "POST",
          headers: { Authorization: "Bearer " + input.value.trim() },
        })
          .then(function (r) { return r.text().then(function (t) { out.textContent = r.status + " " + t; }); })
          .catch(function (err) { out.textContent = "failed: " + err.message; });
      });
    });
  }
})();
