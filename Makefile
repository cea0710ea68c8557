# SPDX-License-Identifier: GPL-2.0
#
# vmalab: build the module against a kernel tree, plus the user-space tools.
#
#   make                 build rust/vmalab.ko against $(KDIR) (default: the cached test kernel)
#   make FLAVOR=debug    ... against the debug (KASAN/lockdep) kernel
#   make clippy          rebuild the module with the kernel's CLIPPY=1
#   make fmt / fmt-check rustfmt (kernel .rustfmt.toml for the module, cargo fmt for user space)
#   make rust-analyzer   write rust-project.json for the module
#   make userspace       cargo build the selftests, tools and samples
#
# Build the kernel first with tools/kernel (tools/test does everything).
# The module is built out of tree into $(MO), so the repo stays clean and both
# flavours can coexist.

VMALAB_CACHE ?= $(HOME)/.cache/vmalab
FLAVOR ?= default
KDIR ?= $(VMALAB_CACHE)/kernel/$(FLAVOR)
MO ?= $(VMALAB_CACHE)/module/$(FLAVOR)
LLVM ?= -19
RUST_SOURCES := $(wildcard rust/*.rs rust/*/*.rs)

KMAKE = $(MAKE) -C $(KDIR) M=$(CURDIR) MO=$(MO) LLVM=$(LLVM)

.PHONY: all module clippy fmt fmt-check rust-analyzer userspace clean

all: module

module:
	@test -f $(KDIR)/Module.symvers || { echo "no built kernel in KDIR=$(KDIR); run tools/kernel $(FLAVOR)"; exit 1; }
	@mkdir -p $(MO)
	$(KMAKE) modules

# Clippy runs as part of compiling the crate, so force the crate to be rebuilt.
clippy:
	@mkdir -p $(MO)
	rm -f $(MO)/rust/vmalab_main.o
	$(KMAKE) CLIPPY=1 modules

fmt:
	rustfmt --edition 2021 --config-path $(KDIR)/source/.rustfmt.toml $(RUST_SOURCES)
	cargo fmt --all

fmt-check:
	rustfmt --check --edition 2021 --config-path $(KDIR)/source/.rustfmt.toml $(RUST_SOURCES)
	cargo fmt --all --check

# Kbuild writes rust-project.json into the external module's output dir; editors
# look for it at the root of the repo.
rust-analyzer:
	@mkdir -p $(MO)
	$(KMAKE) rust-analyzer
	@f=$$(ls -t $(MO)/rust-project.json $(KDIR)/rust-project.json 2>/dev/null | head -n 1); \
		test -n "$$f" && cp "$$f" rust-project.json && echo "wrote rust-project.json (from $$f)"

userspace:
	cargo build --release --workspace

clean:
	rm -rf $(MO)
	cargo clean
