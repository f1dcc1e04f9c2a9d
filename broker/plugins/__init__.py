"""amqtt plugins that hand authentication and topic checks to :class:`broker.access.AccessControl`."""
