# ---- the workshop (docs/workshop/): labs as code, and the docs' diagrams ----
# Included by the Makefile. Each lab has a state folder of its own, $(LABS_DIR)/lab-<n>:
# lab-start empties only that folder (and only when a lab made it), then builds the lab's
# starting state from nothing; lab-check exits 0 when the lab's outcome is there, else 1
# with one hint line; lab-solve applies the reference solution. The logic is
# src/fraud_detection/labs/ (`fraud lab ...`); tests/e2e/test_labs.py runs every lab.
.PHONY: lab-list lab-start lab-check lab-solve diagrams-check

LAB ?=
LABS_DIR ?= $(CURDIR)/state/labs
# The labs run the project's own code whatever a sourced lab.env points `fraud` at.
LAB_CLI := env -u PYTHONPATH -u FRAUD_PROJECT_DIR $(FRAUD) lab
LAB_NEEDED = @[ -n "$(LAB)" ] || { echo "error: which lab? e.g. make $@ LAB=1 (make lab-list lists them)" >&2; exit 2; }

lab-list: $(VENV)/.synced ## Workshop: list the labs (docs/workshop/)
	@$(LAB_CLI) list

lab-start: $(VENV)/.synced ## Workshop: build lab LAB=<n>'s starting state from nothing in state/labs/lab-<n> (LABS_DIR=...)
	$(LAB_NEEDED)
	@$(LAB_CLI) start $(LAB) --labs-dir "$(LABS_DIR)"

lab-check: $(VENV)/.synced ## Workshop: is lab LAB=<n> done? exit 0, else exit 1 with one hint line
	$(LAB_NEEDED)
	@$(LAB_CLI) check $(LAB) --labs-dir "$(LABS_DIR)"

lab-solve: $(VENV)/.synced ## Workshop: apply lab LAB=<n>'s reference solution in its own folder, then check it
	$(LAB_NEEDED)
	@$(LAB_CLI) solve $(LAB) --labs-dir "$(LABS_DIR)"

# Every ```mermaid block of README.md and docs/ parsed by Mermaid itself (Node, offline once
# tools/mermaid/node_modules is installed from its package-lock.json).
MERMAID_DIR := tools/mermaid

$(MERMAID_DIR)/node_modules/.package-lock.json: $(MERMAID_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: npm not found: install Node.js 20+ (https://nodejs.org) for the diagram check" >&2; exit 2; }
	@echo "Installing Mermaid's parser into $(MERMAID_DIR)/node_modules (npm ci)"
	@cd $(MERMAID_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

diagrams-check: $(MERMAID_DIR)/node_modules/.package-lock.json ## Check that every Mermaid diagram in README.md and docs/ parses (Node; npm ci the first time)
	@node $(MERMAID_DIR)/check.mjs README.md $$(find docs -name '*.md' | sort)
