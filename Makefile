# Two entry points for a fresh machine (see README.md): `make demo` and `make test`.
VENV := .venv/bin
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck check clean fuzz-c wheel-check

# Two install levels (scripts/setup.sh): the demo's own needs, and everything the tests drive as well.
.setup-demo-done: pyproject.toml setup.py teep_coap/encoding/_plaincbor.c scripts/setup.sh
	bash scripts/setup.sh demo

.setup-done: pyproject.toml setup.py teep_coap/encoding/_plaincbor.c scripts/setup.sh interop/node/package.json
	bash scripts/setup.sh full

setup: .setup-done

demo: .setup-demo-done
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(VENV)/teep-coap demo

test: .setup-done
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(VENV)/python -m pytest -q $(PYTEST_ARGS)

lint: .setup-done
	$(VENV)/ruff check teep_coap tests interop scripts
	$(VENV)/ruff format --check teep_coap tests interop scripts

typecheck: .setup-done
	$(VENV)/mypy

check: lint typecheck test

# The decoder's C check under AddressSanitizer/UBSan, fed mutated and random bytes.
fuzz-c: .setup-done
	tmp=$$(mktemp -d) && \
	gcc -shared -fPIC -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
	    -I"$$($(VENV)/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
	    teep_coap/encoding/_plaincbor.c -o $$tmp/_plaincbor.so && \
	PYTHONMALLOC=malloc LD_PRELOAD=$$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
	    UBSAN_OPTIONS=halt_on_error=1 $(VENV)/python scripts/fuzz_plaincbor.py $$tmp/_plaincbor.so

# Builds the wheel, installs it into a fresh virtualenv outside the checkout and runs the demo from there.
wheel-check: .setup-demo-done
	bash scripts/wheel_check.sh

clean:
	rm -rf .setup-done .setup-demo-done .venv build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
