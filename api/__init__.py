"""Switchboard's REST API (FastAPI): message history and health, behind HTTP Basic with MQTT credentials.

``api.app`` builds the application from an engine; ``api.deps`` holds the shared dependencies;
``api.routes`` has one module per resource; ``api.main`` serves it with uvicorn.
"""
