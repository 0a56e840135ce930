"""``/messages``: a named message delivered to an instance (issue 7), by instance id or by
correlation keys, once per message id."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from domain.identity import Actor
from interface.http import schemas
from interface.http.commands import Outcome, run_command
from interface.http.openapi import COMMAND_ERRORS, IdempotencyKey, errors
from interface.http.services import Services


class MessageController(Controller):
    path = "/messages"
    tags = ["instances"]

    @post("/", status_code=202, responses=errors(*COMMAND_ERRORS), summary="Deliver a message")
    async def deliver(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services],
        data: JSONBody[schemas.DeliverMessage], idempotency_key: IdempotencyKey = None,
    ) -> Response[schemas.MessageReceipt]:
        """Delivers the message to the instance that waits for it: admins (and other services,
        with a service token) by `instance_id` or `correlation_keys`; an instance's learner to
        their own instance by `instance_id`. `status` says what happened: `delivered`, `kept`
        (nobody waits yet; delivered when an instance does) or `duplicate` (this `message_id`
        came before, nothing more happens). Another learner's instance is a 404."""
        actor, service = request.user, services.service

        def decide(_key: str | None) -> Outcome:
            if data.instance_id is not None:
                service.visible_instance(actor, data.instance_id)  # 404 for those who may not know it
            status = service.deliver_message(actor, data.name, data.payload, data.message_id,
                                             instance_id=data.instance_id, correlation_keys=data.correlation_keys)
            return Outcome(schemas.MessageReceipt(message_id=data.message_id, status=status), 202)

        return await run_command(request, services, "deliver_message", decide, payload=data)
