# mailtee developer entry points. `make run` and `make test` are the README's first two commands.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= var/config.toml

.PHONY: run test bench lint fuzz venv clean deb

$(BIN)/proxy-admin: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/proxy-admin

## run: install into .venv, create ./var/config.toml with a demo provider if missing, run in the foreground
## (a relative --state-dir is relative to the config's folder: "." keeps all state in ./var)
run: venv
	@test -f $(CONFIG) || $(BIN)/proxy-admin --config $(CONFIG) init --demo --state-dir .
	$(BIN)/proxy-admin --config $(CONFIG) run

## test: the full test suite (needs the apt packages .ci/run installs for the e2e tests)
test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check proxy archive admin accounts web tests bench fuzz
	$(BIN)/ruff format --check proxy archive admin accounts web tests bench fuzz
	$(BIN)/mypy proxy archive accounts

## fuzz: >= 1,000,000 executions each through the SMTP and POP3 cores (not in CI; atheris
## gives coverage guidance when installed, random token splicing otherwise)
fuzz: venv
	mkdir -p var/fuzz-corpus var/fuzz-corpus-pop3
	$(BIN)/python fuzz/smtp_core.py -runs=1000000 var/fuzz-corpus
	$(BIN)/python fuzz/pop3_core.py -runs=1000000 var/fuzz-corpus-pop3

bench: venv
	$(BIN)/python bench/smtp_relay.py

## deb: dist/mailtee_<version>_<arch>.deb (venv in /opt/mailtee; see packaging/README.md)
deb:
	packaging/build-deb.sh

clean:
	rm -rf $(VENV) var .pytest_cache
