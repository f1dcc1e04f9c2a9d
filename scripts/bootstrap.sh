# Shared by scripts/up and scripts/test: make sure uv is there (from PyPI) and never download a Python.
# Sourced, not run.
export UV_PYTHON_DOWNLOADS=never
if ! command -v uv >/dev/null 2>&1; then
    echo "installing uv from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check uv
fi
# Python caches compiled modules in __pycache__ (ignored by git). Without that every `switchboard` process
# the tests start compiles SQLAlchemy, FastAPI and amqtt from source again: seconds each.
unset PYTHONDONTWRITEBYTECODE
