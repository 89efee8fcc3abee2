"use strict";
// Log in through the JSON API, then go where the operator was heading (same site only).
document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("login-error");
  error.dataset.text ??= error.textContent;
  error.textContent = error.dataset.text;
  error.hidden = true;
  const response = await fetch("/api/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      username: document.getElementById("username").value,
      password: document.getElementById("password").value,
    }),
  });
  if (!response.ok) {
    if (response.status === 429 || response.status === 503) {
      // Too many failed logins (how long to wait), or the database is down: the server says
      // so in both languages, rather than "wrong password".
      const body = await response.json().catch(() => ({}));
      if (typeof body.detail === "string") error.textContent = body.detail;
    }
    error.hidden = false;
    return;
  }
  const next = new URLSearchParams(location.search).get("next") || "/console";
  location.assign(next.startsWith("/") && !next.startsWith("//") ? next : "/console");
});
