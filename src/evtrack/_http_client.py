"""A tiny synchronous JSON client for the CLI's commands that talk to a running server."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class ServerError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message} (HTTP {status})")
        self.status = status
        self.code = code


def default_server() -> str:
    return (
        os.environ.get("EVTRACK_SERVER")
        or os.environ.get("MLFLOW_TRACKING_URI")
        or "http://127.0.0.1:5000"
    )


class ApiClient:
    def __init__(self, server: str, user: str | None = None) -> None:
        self.server = server.rstrip("/")
        self.user = user

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "evtrack-cli"}
        username = os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif username:
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        if self.user:
            headers["X-Evtrack-User"] = self.user
        return headers

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        api: str = "2.0",
        **query: Any,
    ) -> Any:
        params = {k: v for k, v in query.items() if v is not None}
        url = f"{self.server}/api/{api}/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())
            except ValueError:
                err = {}
            raise ServerError(
                exc.code, err.get("error_code", "HTTP_ERROR"), err.get("message", str(exc))
            ) from None
