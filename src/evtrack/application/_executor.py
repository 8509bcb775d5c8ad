"""``execute(command, context)``: the one way anything is written to the log.

The domain decides which events a command means; the recorder stores them. Between the two,
the executor owns what every write shares: the metadata (who, which request, which client),
the idempotency key (the client's, or one derived from a replay-safe command's content), the
transaction and its retries on a version conflict, turning an event that no read model could
hold into a 400, and ringing the doorbell for projectors once the transaction has committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from evtrack.application._context import Context
from evtrack.domain import OPEN_RULES, Command, Rules, plan
from evtrack.errors import conflict, invalid
from evtrack.eventlog import IdempotencyKey, Recorder, WrongExpectedVersion
from evtrack.events import ConstraintViolation, Metadata

R = TypeVar("R")

_encoder = msgspec.msgpack.Encoder()


class CommandExecutor:
    """Runs domain commands against a recorder; one per server, built by the composition root."""

    def __init__(
        self,
        recorder: Recorder,
        *,
        rules: Rules = OPEN_RULES,
        on_commit: Callable[[frozenset[str]], None] | None = None,
        conflict_retries: int = 8,
    ) -> None:
        self.recorder = recorder
        self.rules = rules
        self.on_commit = on_commit
        self.conflict_retries = conflict_retries

    async def execute(self, command: Command, context: Context) -> Any:
        """Carry out ``command`` for ``context``'s caller; answer its ``result_type``."""
        try:
            work = plan(command, self.rules)
        except ConstraintViolation as exc:  # a value built while checking, e.g. points
            raise invalid(f"Invalid value: {exc}") from None
        metadata = Metadata(
            actor=context.principal,
            request_id=context.request_id,
            client=context.client,
            claimed_actor=context.claimed_principal,
            source=context.source,
        )
        key = self._key(command, context)
        attempt = 0
        while True:
            attempt += 1
            try:
                committed = await self.recorder.transact(
                    work,
                    metadata=metadata,
                    result_type=command.result_type,
                    idempotency_key=key,
                    contended=attempt > 1,
                )
            except WrongExpectedVersion as exc:
                if attempt < self.conflict_retries:
                    continue
                raise conflict(f"Concurrent modification, please retry: {exc}") from exc
            except ConstraintViolation as exc:
                raise invalid(f"Invalid value: {exc}") from None
            if self.on_commit is not None and committed.appended_types:
                self.on_commit(committed.appended_types)
            return committed.result

    @staticmethod
    def _key(command: Command, context: Context) -> IdempotencyKey | None:
        if context.idempotency_key:
            # Scoped by caller and route: one user's key can never fetch another's answer,
            # nor stop another's write. (A spool must be delivered under the credentials
            # that wrote it, which `evtrack sync` does when given the same ones.)
            return IdempotencyKey.from_parts(
                context.principal, context.scope, context.idempotency_key, derived=False
            )
        if command.replay_safe():
            return IdempotencyKey.from_parts(
                context.principal,
                type(command).__name__,
                _encoder.encode(command.key_content()),
                derived=True,
            )
        return None
