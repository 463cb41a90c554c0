# Build and install fused the way a Debian admin expects:
#   make && sudo make install           commands in /usr/local/bin, man pages, bash and zsh completions
#   make install PREFIX=/usr DESTDIR=/tmp/pkg    (staged, for a package)
#   sudo make uninstall                 removes exactly what install put there
# Needs Node >= 20, npm, g++, make and python3 (node-gyp); `make` runs `npm ci` when node_modules is missing.
# Installed: $(PREFIX)/lib/fused holds each command's one-file bundle with its V8 code cache, the native addon and
# the two-line bin/ shims (nothing from node_modules: the bundles carry their dependencies); $(PREFIX)/bin/NAME
# links to its shim. See README.md and fusedctl(1).

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib/fused
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
UNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL ?= install
NODE ?= node
NPM ?= npm

COMMANDS := fusedctl fusedcp fusedcat fusedmap fusedthrottle
BUNDLES := $(COMMANDS:%=dist/bundle/%.cjs)
ADDON := build/Release/fused_native.node
MAN1 := $(wildcard man/*.1)
MAN5 := $(wildcard man/*.5)
MAN7 := $(wildcard man/*.7)
COMPLETIONS := dist/completion/fused.bash dist/completion/_fused
SOURCES := $(shell find src -name '*.ts' ! -name '*.test.ts') tsconfig.json package.json scripts/bundle.mjs

.PHONY: all install uninstall check demo clean deps

all: $(BUNDLES) $(ADDON) $(COMPLETIONS)

node_modules/.package-lock.json:
	$(NPM) ci --no-audit --no-fund

# tsc, then one bundle per command and its code cache (scripts/bundle.mjs); the bundles are made together.
$(BUNDLES) &: $(SOURCES) | node_modules/.package-lock.json
	$(NPM) run --silent build

$(ADDON): binding.gyp $(wildcard native/*.cc native/*.h) | node_modules/.package-lock.json
	npx node-gyp rebuild --nodedir=/usr

dist/completion/fused.bash: $(BUNDLES)
	@mkdir -p $(@D)
	$(NODE) bin/fusedctl.cjs completion bash > $@.tmp && mv $@.tmp $@

dist/completion/_fused: $(BUNDLES)
	@mkdir -p $(@D)
	$(NODE) bin/fusedctl.cjs completion zsh > $@.tmp && mv $@.tmp $@

# bash-completion loads completions/NAME when NAME is first completed: one script, a name per command.
# -p keeps each code cache's time at or after its bundle's: bin/start.cjs offers V8 only a cache made after the bundle.
install: all
	$(INSTALL) -d $(DESTDIR)$(LIBDIR)/bin $(DESTDIR)$(LIBDIR)/dist/bundle $(DESTDIR)$(LIBDIR)/build/Release \
		$(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	$(INSTALL) -p -m 755 bin/start.cjs $(COMMANDS:%=bin/%.cjs) $(DESTDIR)$(LIBDIR)/bin/
	$(INSTALL) -p -m 644 $(BUNDLES) $(DESTDIR)$(LIBDIR)/dist/bundle/
	$(INSTALL) -p -m 644 $(BUNDLES:%=%.cache) $(DESTDIR)$(LIBDIR)/dist/bundle/
	$(INSTALL) -p -m 755 $(ADDON) $(DESTDIR)$(LIBDIR)/build/Release/
	for c in $(COMMANDS); do ln -sfn $(LIBDIR)/bin/$$c.cjs $(DESTDIR)$(BINDIR)/$$c; done
	$(INSTALL) -p -m 644 $(MAN1) $(DESTDIR)$(MANDIR)/man1/
	$(INSTALL) -p -m 644 $(MAN5) $(DESTDIR)$(MANDIR)/man5/
	$(INSTALL) -p -m 644 $(MAN7) $(DESTDIR)$(MANDIR)/man7/
	$(INSTALL) -p -m 644 dist/completion/fused.bash $(DESTDIR)$(BASHCOMPDIR)/fusedctl
	for c in $(filter-out fusedctl,$(COMMANDS)); do ln -sfn fusedctl $(DESTDIR)$(BASHCOMPDIR)/$$c; done
	$(INSTALL) -p -m 644 dist/completion/_fused $(DESTDIR)$(ZSHCOMPDIR)/_fused
	$(INSTALL) -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(PREFIX)/share/doc/fused
	sed 's|/usr/lib/fused/|$(LIBDIR)/|g' packaging/fused-server.service > $(DESTDIR)$(UNITDIR)/fused-server.service
	chmod 644 $(DESTDIR)$(UNITDIR)/fused-server.service
	$(INSTALL) -p -m 644 packaging/fused.conf $(DESTDIR)$(PREFIX)/share/doc/fused/fused.conf.example

uninstall:
	rm -f $(COMMANDS:%=$(DESTDIR)$(BINDIR)/%) $(COMMANDS:%=$(DESTDIR)$(BASHCOMPDIR)/%) $(DESTDIR)$(ZSHCOMPDIR)/_fused
	rm -f $(MAN1:man/%=$(DESTDIR)$(MANDIR)/man1/%) $(MAN5:man/%=$(DESTDIR)$(MANDIR)/man5/%) $(MAN7:man/%=$(DESTDIR)$(MANDIR)/man7/%)
	rm -f $(DESTDIR)$(UNITDIR)/fused-server.service
	rm -rf $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PREFIX)/share/doc/fused

# The Debian packages the test bed needs (.ci/deps: a no-op when they are there), then unit tests and bats suites.
deps:
	bash .ci/deps

check: deps all
	FUSED_BUILT=1 bash test/run.sh

demo:
	bash demo/run.sh

clean:
	rm -rf dist build
