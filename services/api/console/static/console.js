// The console's only script, and none of the pages needs it to work: it shows times in the
// viewer's own time zone, and signs in the token that `make run` prints in a link's fragment
// (a fragment never reaches the server or its logs).
(function () {
  "use strict";
  var stamp = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    timeZoneName: "short"
  });
  var day = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
  function local() {
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var at = new Date(el.getAttribute("datetime"));
      if (!isNaN(at)) { el.title = el.textContent; el.textContent = stamp.format(at); }
    });
    document.querySelectorAll("text[data-date]").forEach(function (el) {
      var at = new Date(el.getAttribute("data-date"));
      if (!isNaN(at)) { el.textContent = day.format(at); }
    });
  }
  function signInFromLink() {
    var form = document.getElementById("sign-in");
    var match = /^#token=(.+)$/.exec(window.location.hash);
    if (!form || !match) { return; }
    history.replaceState(null, "", window.location.pathname + window.location.search);
    document.getElementById("token").value = decodeURIComponent(match[1]);
    form.submit();
  }
  document.addEventListener("DOMContentLoaded", function () { local(); signInFromLink(); });
})();
