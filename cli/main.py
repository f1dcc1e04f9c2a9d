"""The ``switchboard`` command: run the services and administer users, groups and the database.

Every error Switchboard raises on purpose ends here as one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable, Sequence

import yaml
from sqlalchemy import Engine

from cli import database_notice
from switchboard import config_reference
from switchboard.db import make_engine, session_scope, upgrade
from switchboard.errors import AccountError, SwitchboardError
from switchboard.logs import configure_logging
from switchboard.openfiles import raise_open_file_limit
from switchboard.schema import Role
from switchboard.settings import Settings, check_settings, load_settings


def _config_option() -> argparse.ArgumentParser:
    """``--config FILE``, given to every command too, so it may come before or after the command's name
    (SUPPRESS: a command without it keeps the value given before it)."""
    option = argparse.ArgumentParser(add_help=False)
    option.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="YAML settings file (default: config/switchboard.yaml)",
    )
    return option


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description="Chat over MQTT: broker, bridge and API.")
    parser.add_argument("--config", metavar="FILE", help="YAML settings file (default: config/switchboard.yaml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_config_option()]

    commands.add_parser("up", parents=common, help="run broker, bridge and API together (migrates the database first)")
    commands.add_parser("broker", parents=common, help="run the MQTT broker alone")
    commands.add_parser("bridge", parents=common, help="run the bridge alone (needs SWITCHBOARD_BRIDGE__PASSWORD)")
    commands.add_parser("api", parents=common, help="run the REST API alone")

    user = commands.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    add = user.add_parser("add", parents=common, help="add a user (password from --password, else read from stdin)")
    add.add_argument("name")
    add.add_argument("--password", help="the password; omit it to type it or pipe it on stdin")
    add.add_argument("--role", choices=[role.value for role in Role], default=Role.USER.value)
    user.add_parser("list", parents=common, help="list users")
    for action, what in (("disable", "disable a user (its connections close)"), ("enable", "enable a user again")):
        user.add_parser(action, parents=common, help=what).add_argument("name")

    group = commands.add_parser("group", help="manage groups").add_subparsers(dest="action", required=True)
    create = group.add_parser("create", parents=common, help="create a group")
    create.add_argument("group")
    create.add_argument("--member", action="append", default=[], metavar="NAME", help="a member (repeatable)")
    member = group.add_parser("add-member", parents=common, help="add a user to a group")
    member.add_argument("group")
    member.add_argument("name")
    removal = group.add_parser(
        "remove-member", parents=common, help="remove a user from a group (takes effect in the broker)"
    )
    removal.add_argument("group")
    removal.add_argument("name")

    config = commands.add_parser("config", help="check and show the configuration").add_subparsers(
        dest="action", required=True
    )
    config.add_parser("check", parents=common, help="list every problem in the configuration (exit 1 if any)")
    config.add_parser("show", parents=common, help="print the effective configuration as YAML, secrets masked")
    config.add_parser("reference", help="print the configuration reference (docs/configuration.md)")

    db = commands.add_parser("db", help="manage the database").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", parents=common, help="create or migrate the schema to the newest revision")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "config":
        return _config(args)
    try:
        settings = load_settings(args.config)
        configure_logging(settings.log.level, settings.log.format)
        args.new_database = database_notice.new_sqlite_file(settings.database_url) is not None
        if args.new_database:
            database_notice.say_new(settings.database_url)
        engine = make_engine(settings.database_url)
        handler = _HANDLERS[(args.command, getattr(args, "action", None))]
        handler(args, settings, engine)
    except SwitchboardError as exc:
        print(f"switchboard: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _config(args: argparse.Namespace) -> int:
    """``config check|show|reference``: work on a configuration that may be broken, so before loading it."""
    if args.action == "reference":
        print(config_reference.render(), end="")
        return 0
    problems = check_settings(args.config)
    for problem in problems:
        print(f"switchboard: error: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in the configuration", file=sys.stderr)
        return 1
    if args.action == "check":
        print("the configuration is valid")
        return 0
    print(yaml.safe_dump(config_reference.effective(load_settings(args.config)), sort_keys=False), end="")
    return 0


#: The commands that run a service (the broker, the bridge, the API): on uvloop where it is installed (not on
#: Windows), plain asyncio otherwise.
BROKER_COMMANDS = ("up", "broker_only", "bridge_only", "api_only")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _serve(name: str) -> Callable[[argparse.Namespace, Settings, Engine], None]:
    """Runs ``cli.stack.<name>``. The services are imported only by the commands that run them, so an
    administration command (``user list``) starts in a fraction of the time."""

    def handler(_args: argparse.Namespace, settings: Settings, engine: Engine) -> None:
        from cli import stack

        raise_open_file_limit()  # every connection is a file descriptor; the default soft limit may be 1024
        with asyncio.Runner(loop_factory=_loop_factory() if name in BROKER_COMMANDS else None) as runner:
            runner.run(getattr(stack, name)(settings, engine))

    return handler


def _read_password(given: str | None) -> str:
    if given is not None:
        return given
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Repeat password: "):
            raise AccountError("the two passwords differ: try again")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _user_add(args: argparse.Namespace, _settings: Settings, engine: Engine) -> None:
    from switchboard import accounts  # the ORM: only the administration commands load it

    password = _read_password(args.password)
    upgrade(engine)
    with session_scope(engine) as session:
        accounts.create_user(session, args.name, password, Role(args.role))
    print(f"user {args.name} added ({args.role})")


def _user_list(args: argparse.Namespace, settings: Settings, engine: Engine) -> None:
    from switchboard import accounts  # the ORM: only the administration commands load it

    upgrade(engine)
    with session_scope(engine) as session:
        users = accounts.list_users(session)
    for user in users:
        state = " (disabled)" if user.disabled else ""
        print(f"{user.name}\t{user.role}{state}")
    if not users:
        print("no users")
        if not args.new_database:  # else that was said already
            database_notice.say_no_users(settings.database_url)


def _group_create(args: argparse.Namespace, _settings: Settings, engine: Engine) -> None:
    from switchboard import accounts  # the ORM: only the administration commands load it

    upgrade(engine)
    with session_scope(engine) as session:
        accounts.create_group(session, args.group, args.member)
    print(f"group {args.group} created with {len(args.member)} member(s)")


def _group_add_member(args: argparse.Namespace, _settings: Settings, engine: Engine) -> None:
    from switchboard import accounts  # the ORM: only the administration commands load it

    upgrade(engine)
    with session_scope(engine) as session:
        accounts.add_member(session, args.group, args.name)
    print(f"{args.name} is a member of {args.group}")


def _user_disable(args: argparse.Namespace, _settings: Settings, engine: Engine) -> None:
    from switchboard import accounts  # the ORM: only the administration commands load it

    upgrade(engine)
    with session_scope(engine) as session:
        accounts.set_disabled(session, args.name, args.action == "disable")
    print(f"user {args.name} {args.action}d")


def _group_remove_member(args: argparse.Namespace, _settings: Settings, engine: Engine) -> None:
    from switchboard import accounts  # the ORM: only the administration commands load it

    upgrade(engine)
    with session_scope(engine) as session:
        removed = accounts.remove_member(session, args.group, args.name)
    print(f"{args.name} removed from {args.group}" if removed else f"{args.name} was not a member of {args.group}")


def _db_upgrade(_args: argparse.Namespace, _settings: Settings, engine: Engine) -> None:
    upgrade(engine)
    print("database schema is up to date")


_HANDLERS: dict[tuple[str, str | None], Callable[[argparse.Namespace, Settings, Engine], None]] = {
    ("up", None): _serve("up"),
    ("broker", None): _serve("broker_only"),
    ("bridge", None): _serve("bridge_only"),
    ("api", None): _serve("api_only"),
    ("user", "add"): _user_add,
    ("user", "list"): _user_list,
    ("group", "create"): _group_create,
    ("user", "disable"): _user_disable,
    ("user", "enable"): _user_disable,
    ("group", "add-member"): _group_add_member,
    ("group", "remove-member"): _group_remove_member,
    ("db", "upgrade"): _db_upgrade,
}

if __name__ == "__main__":
    sys.exit(main())
