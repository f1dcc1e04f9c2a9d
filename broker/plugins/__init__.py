"""amqtt plugins: authentication against the users table, via :class:`broker.access.AccessControl`."""
