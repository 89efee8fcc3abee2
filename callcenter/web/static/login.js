"use strict";
// Log in through the JSON API, then go where the operator was heading (same site only).
document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("login-error");
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
    error.hidden = false;
    return;
  }
  const next = new URLSearchParams(location.search).get("next") || "/console";
  location.assign(next.startsWith("/") && !next.startsWith("//") ? next : "/console");
});
