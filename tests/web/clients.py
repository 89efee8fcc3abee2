"""The web tests' logged-in API client: one account password for the test users, one log-in."""

from __future__ import annotations

from fastapi.testclient import TestClient

from callcenter.web.app import create_app

PASSWORD = "correct horse battery"


def logged_in(username: str) -> TestClient:
    """A client of a fresh app with ``username``'s session cookie (``POST /api/session``)."""
    client = TestClient(create_app())
    response = client.post("/api/session", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return client
