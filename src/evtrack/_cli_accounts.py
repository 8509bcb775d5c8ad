"""``evtrack users`` and ``evtrack tokens``: accounts and access tokens of a running server.

They call the server's API (MLflow's auth routes and evtrack's token routes) with the
credentials in MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN, so every change is
an event recorded under the caller, like any other write.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from evtrack._http_client import ApiClient, ServerError

USERS = "mlflow/users"


def add_account_commands(
    commands: Any, add_server_flags: Callable[[argparse.ArgumentParser], None]
) -> None:
    users = commands.add_parser(
        "users",
        help="manage users of a server running with --auth (admin)",
        description="Create, list and delete users, set passwords and admin rights, and grant "
        "permissions, through the server's API. Credentials come from MLFLOW_TRACKING_USERNAME "
        "and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN).",
    )
    u = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    create = u.add_parser("create", help="create a user (the password is asked for)")
    create.add_argument("username")
    create.add_argument("--admin", action="store_true", help="make the new user an admin")
    u.add_parser("list", help="list users")
    delete = u.add_parser("delete", help="delete a user (their tokens and grants go too)")
    delete.add_argument("username")
    password = u.add_parser(
        "set-password",
        help="set a user's password (your own asks for the current one)",
        description="Set USERNAME's password; rotating the admin password is this command run "
        "by the admin. The new password is asked for, or read from EVTRACK_NEW_PASSWORD.",
    )
    password.add_argument("username")
    admin = u.add_parser("set-admin", help="give or take admin rights")
    admin.add_argument("username")
    admin.add_argument("is_admin", choices=["true", "false"])
    grant = u.add_parser(
        "grant", help="grant a permission (READ, USE, EDIT, MANAGE, DENY) on a resource"
    )
    grant.add_argument("username")
    grant.add_argument("resource_type", choices=["experiment", "registered_model"])
    grant.add_argument("resource_id", help="experiment id or model name; '*' for all (admin)")
    grant.add_argument("permission", choices=["READ", "USE", "EDIT", "MANAGE", "DENY"])
    revoke = u.add_parser("revoke", help="remove a grant")
    revoke.add_argument("username")
    revoke.add_argument("resource_type", choices=["experiment", "registered_model"])
    revoke.add_argument("resource_id")
    for p in (create, u.choices["list"], delete, password, admin, grant, revoke):
        add_server_flags(p)

    tokens = commands.add_parser(
        "tokens",
        help="create, list and revoke access tokens (MLFLOW_TRACKING_TOKEN)",
        description="Access tokens authenticate like a password (Bearer), can expire, and are "
        "revoked one by one. Yours by default; an admin may name another user.",
    )
    t = tokens.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    t_create = t.add_parser("create", help="create a token; its secret is printed once")
    t_create.add_argument("name", help="what the token is for, e.g. ci-deploy")
    t_create.add_argument("--expires-in-days", type=int, help="expiry (default: never)")
    t_list = t.add_parser("list", help="list tokens (never their secrets)")
    t_revoke = t.add_parser("revoke", help="revoke a token by id")
    t_revoke.add_argument("token_id")
    for p in (t_create, t_list, t_revoke):
        p.add_argument("--for-user", dest="for_user", help="another user's tokens (admin)")
        add_server_flags(p)


def _new_password(prompt: str) -> str:
    from_env = os.environ.get("EVTRACK_NEW_PASSWORD")
    if from_env:
        return from_env
    first = getpass.getpass(prompt)
    if first != getpass.getpass("again: "):
        raise ValueError("the passwords differ")
    return first


def _users(client: ApiClient, args: argparse.Namespace) -> Any:
    command = args.users_command
    if command == "create":
        body = {"username": args.username, "password": _new_password("password: ")}
        result = client.call("POST", f"{USERS}/create", body)
        if args.admin:
            client.call(
                "PATCH", f"{USERS}/update-admin", {"username": args.username, "is_admin": True}
            )
            result["user"]["is_admin"] = True
        return result
    if command == "list":
        return client.call("GET", f"{USERS}/list")
    if command == "delete":
        return client.call("DELETE", f"{USERS}/delete", {"username": args.username})
    if command == "set-password":
        body = {"username": args.username, "password": _new_password("new password: ")}
        if args.username == os.environ.get("MLFLOW_TRACKING_USERNAME"):
            body["current_password"] = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
        return client.call("PATCH", f"{USERS}/update-password", body)
    if command == "set-admin":
        body = {"username": args.username, "is_admin": args.is_admin == "true"}
        return client.call("PATCH", f"{USERS}/update-admin", body)
    body = {
        "username": args.username,
        "resource_type": args.resource_type,
        "resource_id": args.resource_id,
    }
    if command == "grant":
        body["permission"] = args.permission
    return client.call("POST", f"{USERS}/permissions/{command}", body, api="3.0")


def _tokens(client: ApiClient, args: argparse.Namespace) -> Any:
    command = args.tokens_command
    if command == "create":
        body: dict[str, Any] = {"name": args.name, "username": args.for_user}
        if args.expires_in_days is not None:
            body["expires_in_days"] = args.expires_in_days
        return client.call("POST", "evtrack/tokens/create", body)
    if command == "list":
        return client.call("GET", "evtrack/tokens/list", username=args.for_user)
    return client.call(
        "POST", "evtrack/tokens/revoke", {"token_id": args.token_id, "username": args.for_user}
    )


def run_account_command(args: argparse.Namespace) -> int:
    client = ApiClient(args.server)
    try:
        result = _users(client, args) if args.command == "users" else _tokens(client, args)
    except ServerError as exc:
        print(f"evtrack: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"evtrack: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0
