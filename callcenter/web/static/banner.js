"use strict";
// The database is down (issue #7): one banner for the console and the supervisor view, said by
// the live stream's status event or by an API call answering 503 {"database": "down"}; a fresh
// queue or report means it is back. T: the page's texts (base.html's i18n block).
window.hytDatabaseBanner = function (down, since, T) {
  const banner = document.getElementById("db-banner");
  if (down && (banner.hidden || since)) {
    const at = (since ? new Date(since) : new Date()).toLocaleTimeString();
    banner.textContent = T.db_down.replace("{since}", T.db_down_since.replace("{time}", at));
  }
  banner.hidden = !down;
  document.body.classList.toggle("db-down", down);
};
