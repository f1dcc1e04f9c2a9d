"""Switchboard's MQTT broker: amqtt 0.12.1 with Switchboard's authentication, ACL and fixes.

``broker.server`` builds and starts it; ``broker.access`` holds who-may-do-what; the modules under
``broker.plugins`` adapt that to amqtt's plugin interface; ``broker.connect`` fixes amqtt's
CONNECT handling. docs/broker.md lists every deliberate difference from amqtt.
"""
