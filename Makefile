# The two commands of the README. Each sets up what it needs on a fresh machine, then runs.
#   make demo   creates .venv if missing, installs the demo, serves it on http://127.0.0.1:7860
#   make test   creates .venv if missing, installs everything (Debian's chromium for the browser
#               tests included), runs the default test suite

PYTHON ?= python3
VENV := .venv
PORT ?= 7860

.PHONY: demo test venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

demo: $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[demo]'
	$(VENV)/bin/python demos/app.py --port $(PORT)

test: $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[test]'
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(VENV)/bin/python -m pytest -q
