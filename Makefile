# Two entry points for a fresh machine (see README.md): `make demo` and `make test`.
VENV := .venv/bin
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck check clean

.setup-done: pyproject.toml setup.py teep_coap/encoding/_plaincbor.c scripts/setup.sh interop/node/package.json
	bash scripts/setup.sh

setup: .setup-done

demo: .setup-done
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(VENV)/teep-coap demo

test: .setup-done
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(VENV)/python -m pytest -q $(PYTEST_ARGS)

lint: .setup-done
	$(VENV)/ruff check teep_coap tests interop
	$(VENV)/ruff format --check teep_coap tests interop

typecheck: .setup-done
	$(VENV)/mypy

check: lint typecheck test

clean:
	rm -rf .setup-done .venv build *.egg-info .pytest_cache .mypy_cache .ruff_cache
