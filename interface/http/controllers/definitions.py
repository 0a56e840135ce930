"""``/definitions``: one per catalog credential, keyed by the credential id; versioned
BPMN bundles that admins upload and deploy."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from litestar import Controller, Request, Response, get, post
from litestar.openapi import ResponseSpec

from application.engine.bundle import bundle_sha256
from domain.errors import NotAllowed, Unavailable
from domain.identity import Actor
from interface.http import schemas, views
from interface.http.commands import Outcome, last_by, run_command
from interface.http.openapi import COMMAND_ERRORS, IdempotencyKey, IfMatch, errors
from interface.http.pagination import Limit, WaitFor
from interface.http.services import Services


def require_admin(actor: Actor, what: str) -> None:
    if not actor.is_admin:
        raise NotAllowed(f"only an admin can {what}")


class DefinitionController(Controller):
    path = "/definitions"
    tags = ["definitions"]

    @get("/", responses=errors(400, 403, 422), summary="Definitions")
    async def list_all(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], skill_id: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None, limit: Limit = 50, wait_for: WaitFor = None,
    ) -> schemas.DefinitionPage:
        """Every definition, as the catalog sees it, with its versions."""
        require_admin(request.user, "list definitions")
        if services.queries is None:
            raise Unavailable("definition lists need the read models, which are not running")
        return await services.read(services.queries.definitions_page, request.user, skill_id=skill_id,
                                   cursor=cursor, limit=limit, wait_for=wait_for)

    @get("/{credential_id:str}", responses=errors(403, 404), summary="One definition")
    async def one(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], credential_id: FromPath[str]
    ) -> Response[schemas.Definition]:
        """The definition of a credential and the list of its versions."""
        require_admin(request.user, "read definitions")
        definition = await services.run(services.service.get_definition, credential_id)
        return Response(views.definition(definition), headers={"ETag": views.etag(definition)})

    @get("/{credential_id:str}/versions/{number:int}", responses=errors(403, 404), summary="One version")
    async def version(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], credential_id: FromPath[str], number: FromPath[int]
    ) -> schemas.DefinitionVersion:
        """One immutable version, with the text of every file of its bundle."""
        require_admin(request.user, "read definitions")

        def load() -> schemas.DefinitionVersion:
            definition = services.service.get_definition(credential_id)
            return views.definition_version(definition, definition.get_version(number))

        return await services.run(load)

    @post("/{credential_id:str}/versions", status_code=201, summary="Upload a bundle version",
          responses={**errors(*COMMAND_ERRORS), 200: ResponseSpec(
              schemas.DefinitionVersion, description="The very same bundle is already this version")})
    async def upload(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], credential_id: FromPath[str],
        data: JSONBody[schemas.UploadDefinitionVersion], idempotency_key: IdempotencyKey = None,
        if_match: IfMatch = None,
    ) -> Response[schemas.DefinitionVersion]:
        """Validates the bundle completely (every problem with its file, element and line) and
        stores it as the next version. The very same bundle again answers with the version it
        already is (200)."""
        actor, service = request.user, services.service
        require_admin(actor, "upload definitions")

        files = {name: text.encode() for name, text in data.files.items()}

        def answer(definition: Any, number: int, added: bool) -> Outcome:
            # A catalog id is any text: the header carries it percent-encoded (RFC 3986).
            return Outcome(views.definition_version(definition, definition.get_version(number)),
                           201 if added else 200, views.etag(definition),
                           f"/definitions/{quote(credential_id, safe='')}/versions/{number}")

        def decide(_key: str | None) -> Outcome:
            before = service.get_definition(credential_id).latest_version
            number = service.upload_definition_version(actor, credential_id, files)
            return answer(service.get_definition(credential_id), number, number > before)

        def recover(_key: str | None) -> Outcome | None:
            # The version moved on past the If-Match: this very bundle may be what moved it.
            definition = service.get_definition(credential_id)
            version = definition.find_version_by_sha256(bundle_sha256(files))
            if version is None or version.added_by != actor.user_id:  # only this admin's own upload
                return None
            return answer(definition, version.number, _added_last(definition, version.number, actor))

        return await run_command(request, services, "upload_definition_version", decide, payload=data,
                                 entity_of=lambda: service.get_definition(credential_id), recover=recover)

    @post("/{credential_id:str}/versions/{number:int}/deploy", status_code=200,
          responses=errors(*COMMAND_ERRORS), summary="Deploy a version")
    async def deploy(
        self, request: Request[Actor, Any, Any], services: NamedDependency[Services], credential_id: FromPath[str], number: FromPath[int],
        idempotency_key: IdempotencyKey = None, if_match: IfMatch = None,
    ) -> Response[schemas.Deployment]:
        """Pins the version in its skill's deployment: new instances start on it; running ones
        keep theirs. `If-Match` names the deployment's version (its `ETag`)."""
        actor, service = request.user, services.service
        require_admin(actor, "deploy definitions")

        def decide(_key: str | None) -> Outcome:
            service.deploy_definition_version(actor, credential_id, number)
            deployment = service.get_deployment(service.get_definition(credential_id).skill_id)
            return Outcome(views.deployment(deployment), 200, views.etag(deployment))

        def recover(_key: str | None) -> Outcome | None:
            definition = service.get_definition(credential_id)
            deployment = service.get_deployment(definition.skill_id)
            pin = deployment.pins.get(credential_id)
            if deployment.deleted or pin is None or (pin["definition_id"], pin["version"]) != (definition.id, number):
                return None
            if last_by(service, deployment.id, "DefinitionPinned", credential_id=credential_id) != actor.user_id:
                return None  # another admin's pin: this request's If-Match no longer holds
            return Outcome(views.deployment(deployment), 200, views.etag(deployment))

        return await run_command(
            request, services, "deploy_definition_version", decide, recover=recover,
            entity_of=lambda: service.get_deployment(service.get_definition(credential_id).skill_id),
        )


def _added_last(definition: Any, number: int, actor: Actor) -> bool:
    """Whether version ``number`` is the definition's latest and this user added it: what a
    keyed upload's first attempt answered 201 for, when its answer was lost (ADR 0006)."""
    return number == definition.latest_version and definition.get_version(number).added_by == actor.user_id
