"""Switchboard's MQTT 3.1.1 broker: its own transport, codec, packet handlers, sessions and routing.

``broker.server`` builds and starts it; docs/broker.md walks through the modules (one per packet
handler: ``handle_connect``, ``handle_publish``, ``handle_subscribe``, ``handle_acks``) and lists every
deliberate difference from amqtt, on which it was first built.
"""
