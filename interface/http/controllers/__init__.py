"""One controller per resource. ``CONTROLLERS`` is what ``create_app`` mounts; another
resource adds its controller here (or passes it to ``create_app(extra_controllers=...)``)."""

from __future__ import annotations

from interface.http.controllers.definitions import DefinitionController
from interface.http.controllers.deployments import DeploymentController
from interface.http.controllers.files import FileController
from interface.http.controllers.instances import InstanceController
from interface.http.controllers.messages import MessageController
from interface.http.controllers.operations import OperationsController
from interface.http.controllers.tasks import TaskController

CONTROLLERS = (InstanceController, TaskController, DefinitionController, DeploymentController, OperationsController,
               FileController, MessageController)
