"""Switchboard's bridge: stores every chat message from the broker in the database, exactly once.

``bridge.consumer`` is MQTT in, ``bridge.store`` is the database out, ``bridge.main`` wires them.
"""
