// simgate status page: swaps in the server-rendered fragments of /ui/state while the page is
// visible. Quick while something shown is on its way (queued, sending, sent without report),
// slow otherwise, and not at all in a hidden tab, so an idle daemon stays idle.
"use strict";
(function () {
  var FAST = 500, SLOW = 5000, timer = null;
  var updated = document.getElementById("updated");
  function schedule(ms) {
    clearTimeout(timer);
    if (document.visibilityState === "visible") timer = setTimeout(poll, ms);
  }
  function poll() {
    fetch("/ui/state" + location.search, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { location.assign("/ui/sign-in"); throw new Error("signed out"); }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (s) {
        Object.keys(s.fragments).forEach(function (id) {
          var el = document.getElementById(id);
          if (el && el.innerHTML !== s.fragments[id]) el.innerHTML = s.fragments[id];
        });
        if (updated) updated.textContent = "updated " + s.updated + " UTC";
        schedule(s.busy ? FAST : SLOW);
      })
      .catch(function (e) {
        if (updated) updated.textContent = "not updating: " + e.message;
        schedule(SLOW);
      });
  }
  document.addEventListener("visibilitychange", function () { schedule(0); });
  schedule(FAST);
})();
