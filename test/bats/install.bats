#!/usr/bin/env bats
# make install into a temporary prefix: the installed commands, man pages and completions work with the source
# tree out of reach, and make uninstall takes every file away again.

load helpers

setup_file() {
	export ROOT PREFIX
	ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd -P)
	PREFIX=$BATS_FILE_TMPDIR/prefix
	make -C "$ROOT" -s install PREFIX="$PREFIX" >"$BATS_FILE_TMPDIR/make.log" 2>&1 || {
		cat "$BATS_FILE_TMPDIR/make.log" >&3
		return 1
	}
}

teardown_file() {
	rm -rf "$BATS_FILE_TMPDIR/prefix" "$BATS_FILE_TMPDIR/stage"
}

# away CMD...: run CMD from another directory with only the prefix and the system on PATH, the source tree (and
# the node_modules it links to) hidden under empty file systems, and every file-name system call traced into
# $BATS_TEST_TMPDIR/trace.
away() {
	local hide=("$ROOT") nm
	nm=$(realpath "$ROOT/node_modules")
	[[ $nm == "$ROOT"/* ]] || hide+=("$(dirname "$nm")")
	unshare -m --propagation private bash -c '
		for d in "${@:2:$1}"; do mount -t tmpfs none "$d" || exit 99; done
		shift $(($1 + 1))
		cd / && exec env -i PATH="$PREFIX/bin:/usr/bin:/bin" HOME=/root TERM=dumb strace -f -qq -A -e trace=%file -o "$TRACE" "$@"
	' hide "${#hide[@]}" "${hide[@]}" "$@"
}
export TRACE

@test "installed commands run from the prefix alone, addon included, and touch nothing of the source tree" {
	TRACE=$BATS_TEST_TMPDIR/trace
	run -0 --separate-stderr away fusedcp --version
	assert_output "$(node -p "require('$ROOT/package.json').version")"
	run -0 --separate-stderr away fusedctl --help
	assert_line --index 0 --regexp '^Usage: fusedctl '
	assert_output --partial 'completion'
	for c in fusedcat fusedmap fusedthrottle; do
		run -0 away "$c" --help
		assert_line --index 0 --regexp "^Usage: $c "
	done
	run -0 grep -c "$PREFIX/lib/fused/dist/bundle/fusedthrottle.cjs.cache" "$TRACE" # started from its code cache
	# A real copy (through the mount path: nothing is fused here) loads the native addon from the prefix.
	head -c 3M /dev/urandom >"$BATS_TEST_TMPDIR/src.bin"
	run -0 away fusedcp "$BATS_TEST_TMPDIR/src.bin" "$BATS_TEST_TMPDIR/dst.bin"
	assert_equal "$(sha256sum <"$BATS_TEST_TMPDIR/dst.bin")" "$(sha256sum <"$BATS_TEST_TMPDIR/src.bin")"
	run -0 grep "fused_native.node" "$TRACE"
	assert_output --partial "\"$PREFIX/lib/fused/build/Release/fused_native.node\""
	run -1 grep -e "\"$ROOT" -e node_modules "$TRACE"
	# Nor could a command that was not run here: the bundles require nothing but Node's own modules.
	run -0 node -e '
		const { builtinModules } = require("node:module");
		for (const f of process.argv.slice(1)) for (const [, m] of require("node:fs").readFileSync(f, "utf8").matchAll(/\brequire\("([^"]+)"\)/g))
			if (!m.startsWith("node:") && !builtinModules.includes(m)) console.log(`${f}: ${m}`);
	' "$PREFIX"/lib/fused/dist/bundle/*.cjs
	assert_output ''
}

@test "man finds every installed page, the protocol in section 7" {
	local page
	for page in fusedcp fusedctl fusedcat fusedmap fusedthrottle; do
		MANPATH=$PREFIX/share/man run -0 man -w "$page"
		assert_output "$PREFIX/share/man/man1/$page.1"
	done
	MANPATH=$PREFIX/share/man run -0 man -w fused-protocol
	assert_output "$PREFIX/share/man/man7/fused-protocol.7"
	MANPATH=$PREFIX/share/man run -0 man -w fused.conf
	assert_output "$PREFIX/share/man/man5/fused.conf.5"
	MANPATH=$PREFIX/share/man MANWIDTH=80 run -0 man 1 fusedcp
	assert_output --regexp 'NAME.*fusedcp'
}

@test "the installed bash completion loads for each command and completes subcommands, options and paths" {
	local dir=$PREFIX/share/bash-completion/completions c
	for c in fusedctl fusedcp fusedcat fusedmap fusedthrottle; do
		run -0 bash -c 'source "$1"; complete -p "$2"' _ "$dir/$c" "$c"
		assert_output "complete -F _fused $c"
	done
	# complete_at WORD...: what bash offers for the last word, one per line.
	local complete_at='source "$F"; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _fused; printf "%s\n" "${COMPREPLY[@]}"'
	F=$dir/fusedctl run -0 bash -c "$complete_at" _ fusedctl st
	assert_output status
	F=$dir/fusedcp run -0 bash -c "$complete_at" _ fusedcp --verb
	assert_output --verbose
	mkdir "$BATS_TEST_TMPDIR/mnt-a"
	F=$dir/fusedctl run -0 bash -c "$complete_at" _ fusedctl fuse "$BATS_TEST_TMPDIR/mnt-"
	assert_output "$BATS_TEST_TMPDIR/mnt-a"
	# What was installed is what the installed fusedctl prints.
	run -0 diff <(PATH=$PREFIX/bin:$PATH fusedctl completion bash) "$dir/fusedctl"
	run -0 diff <(PATH=$PREFIX/bin:$PATH fusedctl completion zsh) "$PREFIX/share/zsh/site-functions/_fused"
}

@test "DESTDIR stages the install for a package; make uninstall leaves no file behind" {
	local stage=$BATS_FILE_TMPDIR/stage
	run -0 make -C "$ROOT" -s install PREFIX=/usr DESTDIR="$stage"
	run -0 readlink "$stage/usr/bin/fusedcp"
	assert_output /usr/lib/fused/bin/fusedcp.cjs
	run -0 test -f "$stage/usr/share/man/man7/fused-protocol.7"
	# The service unit starts the installed server.
	run -0 grep '^ExecStart=' "$stage/usr/lib/systemd/system/fused-server.service"
	assert_output --regexp ' /usr/lib/fused/bin/fusedctl\.cjs serve --config /etc/fused/fused\.conf$'
	run -0 test -f "$stage/usr/share/doc/fused/fused.conf.example"
	run -0 make -C "$ROOT" -s uninstall PREFIX=/usr DESTDIR="$stage"
	run -0 find "$stage" ! -type d
	assert_output ''
	run -0 make -C "$ROOT" -s uninstall PREFIX="$PREFIX"
	run -0 find "$PREFIX" ! -type d
	assert_output ''
	run -1 --separate-stderr env PATH="$PREFIX/bin:/usr/bin:/bin" bash -c 'command -v fusedcp'
}
