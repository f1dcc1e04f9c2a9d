"""amqtt topic plugin: topic scheme v1 and the operator's rules, via :class:`AccessControl`.

amqtt treats a ``None`` answer as a denial, so this plugin always answers True or False.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action as MqttAction
from amqtt.plugins.base import BaseTopicPlugin
from amqtt.session import Session

from switchboard.acl import Action

_ACTIONS = {
    MqttAction.PUBLISH: Action.PUBLISH,
    MqttAction.SUBSCRIBE: Action.SUBSCRIBE,
    MqttAction.RECEIVE: Action.RECEIVE,
}


class AclPlugin(BaseTopicPlugin):
    """Allows a publish, subscription or delivery when :meth:`AccessControl.check` does."""

    @dataclass
    class Config:
        access: Any = None  # broker.access.AccessControl, injected by broker.server

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: MqttAction | None = None
    ) -> bool:
        if session is None or topic is None or action not in _ACTIONS:
            return False
        return (await self.config.access.check(session, topic, _ACTIONS[action])).allowed
